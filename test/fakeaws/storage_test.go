package fakeaws

import "testing"

func TestCheckMaxStorage(t *testing.T) {
	for _, tc := range []struct {
		alloc, max int32
		set        bool
		want       int32
		err        bool
	}{
		{50, 0, false, 0, false},  // not given on create: off
		{50, 50, true, 0, false},  // equal to allocated: off
		{50, 0, true, 0, true},    // 0 is refused: AWS wants allocated to turn it off
		{50, 54, true, 0, true},   // less than 10% above
		{50, 55, true, 55, false}, // exactly 10% above
		{50, 40, true, 0, true},   // below allocated
		{50, 200, true, 200, false},
	} {
		got, aerr := checkMaxStorage("postgres", tc.alloc, tc.max, tc.set)
		if (aerr != nil) != tc.err || got != tc.want {
			t.Errorf("%+v: got %d, %v", tc, got, aerr)
		}
		if aerr != nil && aerr.code != "InvalidParameterCombination" {
			t.Errorf("%+v: code %s", tc, aerr.code)
		}
	}
}
