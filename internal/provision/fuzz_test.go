package provision

import (
	"os"
	"testing"
)

// FuzzParseSpec runs the spec loader (strict YAML decoding, defaults, Validate) on fuzzed
// documents: none may panic it, and whatever it accepts passes Validate again unchanged.
func FuzzParseSpec(f *testing.F) {
	for _, p := range []string{"../../docs/examples/orders.yaml", "../../docs/examples/billing-mysql.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("engine: postgres\nunknown: 1\n"))
	f.Add([]byte("a: &a [*a, *a, *a, *a]"))
	f.Add([]byte("---\n---\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted spec fails Validate: %v", err)
		}
	})
}
