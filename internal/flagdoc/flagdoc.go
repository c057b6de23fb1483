// Package flagdoc checks a binary's flag table in the docs against its flag set, so that the
// docs cannot list a flag that is gone, miss one that exists, or show another default or
// meaning than --help does. Each binary's tests call Check on its own flag set.
//
// A flag table is the first Markdown table after a given heading, with the columns
// | flag | default | meaning |. The flag cell holds the backticked long name and, when there is
// one, the shorthand (`--file`, `-f`); the default cell holds the backticked default as
// pflag prints it (empty for an empty default); the meaning cell is the flag's usage string,
// with any | written as \|.
package flagdoc

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/pflag"
)

// Row is one documented flag.
type Row struct {
	Name, Shorthand, Default, Usage string
}

var ticked = regexp.MustCompile("`([^`]*)`")

// Table returns the rows of the flag table under heading (a whole line, e.g. "## Flags").
func Table(doc []byte, heading string) ([]Row, error) {
	sc := bufio.NewScanner(bytes.NewReader(doc))
	state := 0 // 0 looking for the heading, 1 for the table header, 2 in the table
	var rows []Row
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch state {
		case 0:
			if line == heading {
				state = 1
			}
		case 1:
			if strings.HasPrefix(line, "#") {
				return nil, fmt.Errorf("no flag table under %q", heading)
			}
			if strings.HasPrefix(line, "|") {
				if cells := split(line); len(cells) != 3 || cells[0] != "flag" || cells[1] != "default" || cells[2] != "meaning" {
					return nil, fmt.Errorf("table under %q: header %q, want | flag | default | meaning |", heading, line)
				}
				state = 2
			}
		case 2:
			if !strings.HasPrefix(line, "|") {
				return rows, nil
			}
			cells := split(line)
			if len(cells) != 3 {
				return nil, fmt.Errorf("table under %q: row %q has %d cells, want 3", heading, line, len(cells))
			}
			if strings.Trim(cells[0], "-: ") == "" {
				continue // the |---|---| line
			}
			var r Row
			for _, m := range ticked.FindAllStringSubmatch(cells[0], -1) {
				switch name := m[1]; {
				case strings.HasPrefix(name, "--"):
					r.Name = name[2:]
				case strings.HasPrefix(name, "-"):
					r.Shorthand = name[1:]
				}
			}
			if r.Name == "" {
				return nil, fmt.Errorf("table under %q: row %q names no `--flag`", heading, line)
			}
			r.Default = strings.TrimSuffix(strings.TrimPrefix(cells[1], "`"), "`")
			r.Usage = cells[2]
			rows = append(rows, r)
		}
	}
	if state == 0 {
		return nil, fmt.Errorf("no heading %q", heading)
	}
	if state == 1 {
		return nil, fmt.Errorf("no flag table under %q", heading)
	}
	return rows, sc.Err()
}

// split returns the trimmed cells of a table row; \| inside a cell is a literal |.
func split(line string) []string {
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	line = strings.ReplaceAll(line, `\|`, "\x00")
	cells := strings.Split(line, "|")
	for i, c := range cells {
		cells[i] = strings.TrimSpace(strings.ReplaceAll(c, "\x00", "|"))
	}
	return cells
}

// Check reports every difference between the flag table under heading and fs: flags missing
// from either side, and shorthands, defaults or usage strings that differ.
func Check(doc []byte, heading string, fs *pflag.FlagSet) []error {
	rows, err := Table(doc, heading)
	if err != nil {
		return []error{err}
	}
	var errs []error
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("--%s: listed twice", r.Name))
			continue
		}
		seen[r.Name] = true
		f := fs.Lookup(r.Name)
		if f == nil || f.Hidden {
			errs = append(errs, fmt.Errorf("--%s: documented but not a flag", r.Name))
			continue
		}
		if r.Shorthand != f.Shorthand {
			errs = append(errs, fmt.Errorf("--%s: documented shorthand %q, flag has %q", r.Name, r.Shorthand, f.Shorthand))
		}
		if r.Default != f.DefValue {
			errs = append(errs, fmt.Errorf("--%s: documented default %q, flag has %q", r.Name, r.Default, f.DefValue))
		}
		if r.Usage != f.Usage {
			errs = append(errs, fmt.Errorf("--%s: documented meaning %q, flag usage is %q", r.Name, r.Usage, f.Usage))
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && !seen[f.Name] {
			errs = append(errs, fmt.Errorf("--%s: a flag missing from the table; its row is %s", f.Name, RowOf(f)))
		}
	})
	return errs
}

// RowOf is the table row that documents f, for pasting into the docs.
func RowOf(f *pflag.Flag) string {
	name := "`--" + f.Name + "`"
	if f.Shorthand != "" {
		name += ", `-" + f.Shorthand + "`"
	}
	def := ""
	if f.DefValue != "" {
		def = "`" + f.DefValue + "`"
	}
	return fmt.Sprintf("| %s | %s | %s |", name, def, strings.ReplaceAll(f.Usage, "|", `\|`))
}
