package provision

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func owned(extra map[string]string) map[string]string {
	t := map[string]string{TagManagedBy: ManagedByValue, TagDatabase: "orders"}
	for k, v := range extra {
		t[k] = v
	}
	return t
}

func TestDiff(t *testing.T) {
	inst := func(class string, tags map[string]string) *State {
		return &State{Kind: "db-instance", Name: "orders", ID: "db-1",
			Attrs: map[string]string{"class": class, "engine": "postgres"}, Tags: tags}
	}
	cases := []struct {
		name       string
		desired    *State
		observed   *State
		wantAction Action
		wantFields []FieldDiff
		wantErr    any
	}{
		{name: "absent -> create with all fields", desired: inst("db.t4g.medium", owned(nil)),
			wantAction: ActionCreate, wantFields: []FieldDiff{
				{Field: "class", To: "db.t4g.medium"}, {Field: "engine", To: "postgres"},
				{Field: "tags", To: TagDatabase + "=orders," + TagManagedBy + "=" + ManagedByValue}}},
		{name: "equal -> no-op", desired: inst("db.t4g.medium", owned(nil)), observed: inst("db.t4g.medium", owned(nil)),
			wantAction: ActionNoop},
		{name: "extra foreign tag ignored", desired: inst("db.t4g.medium", owned(nil)),
			observed: inst("db.t4g.medium", owned(map[string]string{"aws:cloudformation": "x"})), wantAction: ActionNoop},
		{name: "class changed -> update only class", desired: inst("db.r6g.large", owned(nil)), observed: inst("db.t4g.medium", owned(nil)),
			wantAction: ActionUpdate, wantFields: []FieldDiff{{Field: "class", From: "db.t4g.medium", To: "db.r6g.large"}}},
		{name: "tag drift -> update tag", desired: inst("db.t4g.medium", owned(map[string]string{"team": "payments"})),
			observed:   inst("db.t4g.medium", owned(map[string]string{"team": "someone"})),
			wantAction: ActionUpdate, wantFields: []FieldDiff{{Field: "tags.team", From: "someone", To: "payments"}}},
		{name: "untagged collision -> error", desired: inst("db.t4g.medium", owned(nil)), observed: inst("db.t4g.medium", nil),
			wantErr: new(*NotOwnedError)},
		{name: "other database's resource -> error", desired: inst("db.t4g.medium", owned(nil)),
			observed: inst("db.t4g.medium", map[string]string{TagManagedBy: ManagedByValue, TagDatabase: "billing"}),
			wantErr:  new(*NotOwnedError)},
		{name: "immutable field -> error", desired: &State{Kind: "db-instance", Name: "orders", Attrs: map[string]string{"engine": "mysql"}, Tags: owned(nil)},
			observed: inst("db.t4g.medium", owned(nil)), wantErr: new(*ImmutableError)},
		{name: "immutable unknown yet -> update, not error", desired: &State{Kind: "x", Name: "y", Attrs: map[string]string{"engine": Unknown}, Tags: owned(nil)},
			observed:   &State{Kind: "x", Name: "y", Attrs: map[string]string{"engine": "a"}, Tags: owned(nil)},
			wantAction: ActionUpdate, wantFields: []FieldDiff{{Field: "engine", From: "a", To: Unknown}}},
		{name: "owned, not desired -> delete", observed: inst("db.t4g.medium", owned(nil)), wantAction: ActionDelete},
		{name: "untagged, not desired -> left alone", observed: inst("db.t4g.medium", nil), wantAction: ActionNoop},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Diff("orders", tc.desired, tc.observed, []string{"engine"})
			if tc.wantErr != nil {
				switch target := tc.wantErr.(type) {
				case **NotOwnedError:
					if !errors.As(err, target) {
						t.Fatalf("want NotOwnedError, got %v", err)
					}
				case **ImmutableError:
					if !errors.As(err, target) {
						t.Fatalf("want ImmutableError, got %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Action != tc.wantAction {
				t.Fatalf("action %s, want %s", c.Action, tc.wantAction)
			}
			if tc.wantAction != ActionDelete && !reflect.DeepEqual(c.Fields, tc.wantFields) {
				t.Fatalf("fields\n got %+v\nwant %+v", c.Fields, tc.wantFields)
			}
		})
	}
}

func TestPlanOutputs(t *testing.T) {
	p := &Plan{Database: "orders", Changes: []Change{
		{Kind: "db-instance", Name: "orders", Action: ActionUpdate, Fields: []FieldDiff{{Field: "class", From: "db.t4g.medium", To: "db.r6g.large"}}},
		{Kind: "iam-role", Name: "r", Action: ActionNoop},
		{Kind: "iam-role", Name: "n", Action: ActionCreate, Fields: []FieldDiff{{Field: "trust", To: "{}"}}},
	}}
	var tb bytes.Buffer
	if err := p.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tb.String(), "db.r6g.large") || !strings.Contains(tb.String(), "1 to create, 1 to update, 0 to delete") {
		t.Fatalf("table:\n%s", tb.String())
	}
	var jb bytes.Buffer
	if err := p.WriteJSON(&jb); err != nil {
		t.Fatal(err)
	}
	var back Plan
	if err := json.Unmarshal(jb.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Changes) != 2 || back.Changes[0].Fields[0].To != "db.r6g.large" {
		t.Fatalf("json: %s", jb.String())
	}
	if p.Empty() || (&Plan{Changes: []Change{{Action: ActionNoop}}}).Empty() == false {
		t.Fatal("Empty wrong")
	}
}
