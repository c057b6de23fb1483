package flagdoc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func flags() *pflag.FlagSet {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.StringP("file", "f", "", "spec (YAML)")
	fs.Duration("wait", time.Minute, "how long: a | b")
	return fs
}

const doc = "# X\n\n## Flags\n\nText.\n\n| flag | default | meaning |\n| --- | --- | --- |\n" +
	"| `--file`, `-f` | | spec (YAML) |\n| `--wait` | `1m0s` | how long: a \\| b |\n\nAfter.\n"

func TestMatchingTablePasses(t *testing.T) {
	if errs := Check([]byte(doc), "## Flags", flags()); len(errs) != 0 {
		t.Errorf("%v", errs)
	}
}

func TestEveryDriftIsReported(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"stale flag", "`--wait`", "`--linger`", "--linger: documented but not a flag"},
		{"missing flag", "| `--wait` | `1m0s` | how long: a \\| b |\n", "", "--wait: a flag missing from the table"},
		{"default", "`1m0s`", "`30s`", `--wait: documented default "30s", flag has "1m0s"`},
		{"usage", "spec (YAML) |", "the spec |", `--file: documented meaning "the spec"`},
		{"shorthand", "`--file`, `-f`", "`--file`", `--file: documented shorthand ""`},
		{"no table", "| flag | default | meaning |", "## Other", `no flag table under "## Flags"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := strings.Replace(doc, tc.from, tc.to, 1)
			if d == doc {
				t.Fatal("the edit changed nothing")
			}
			errs := Check([]byte(d), "## Flags", flags())
			if !strings.Contains(fmt.Sprint(errs), tc.want) {
				t.Errorf("errors %v; want one with %q", errs, tc.want)
			}
		})
	}
}
