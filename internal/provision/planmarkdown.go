package provision

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteMarkdown prints the plan as a pull-request comment: a summary table, then every changed
// field in full as a diff; JSON values (policies) are pretty-printed so the diff shows the
// statements that change.
func (p *Plan) WriteMarkdown(w io.Writer) error {
	var b bytes.Buffer
	cr, up, de := p.Counts()
	fmt.Fprintf(&b, "### Plan for `%s`: %d to create, %d to update, %d to delete\n\n", p.Database, cr, up, de)
	if p.Empty() {
		b.WriteString("No changes: AWS matches the spec.\n")
		_, err := w.Write(b.Bytes())
		return err
	}
	b.WriteString("| action | kind | name | fields |\n| --- | --- | --- | --- |\n")
	for _, c := range p.Changes {
		if c.Action == ActionNoop {
			continue
		}
		var fs []string
		for _, f := range c.Fields {
			fs = append(fs, "`"+f.Field+"`")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Action, mdCell(c.Kind), mdCell(c.Name), strings.Join(fs, ", "))
	}
	for _, c := range p.Changes {
		if c.Action == ActionNoop {
			continue
		}
		fmt.Fprintf(&b, "\n#### %s %s `%s`", c.Action, c.Kind, strings.ReplaceAll(c.Name, "`", "'"))
		if c.ID != "" {
			fmt.Fprintf(&b, " (%s)", mdCell(c.ID))
		}
		b.WriteString("\n")
		for _, f := range c.Fields {
			body := strings.Join(lineDiff(diffLines(f.From), diffLines(f.To)), "\n")
			fence := strings.Repeat("`", max(3, longestRun(body, '`')+1))
			fmt.Fprintf(&b, "\n`%s`\n%sdiff\n%s\n%s\n", f.Field, fence, body, fence)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// diffLines splits a value into the lines a reader compares: JSON documents pretty-printed
// with sorted keys, comma-separated lists (ids, rules, targets) one item a line.
func diffLines(s string) []string {
	if s == "" {
		return nil
	}
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "{") || strings.HasPrefix(t, "[") {
		var v any
		if json.Unmarshal([]byte(t), &v) == nil {
			var out bytes.Buffer
			enc := json.NewEncoder(&out)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			if enc.Encode(v) == nil {
				return strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
			}
		}
	}
	if !strings.ContainsAny(s, " \n") && strings.Contains(s, ",") {
		return strings.Split(s, ",")
	}
	return strings.Split(s, "\n")
}

// lineDiff is a longest-common-subsequence diff of two line lists, as "-", "+" and " " lines.
func lineDiff(a, b []string) []string {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			out = append(out, "  "+a[i])
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, "- "+a[i])
			i++
		default:
			out = append(out, "+ "+b[j])
			j++
		}
	}
	return out
}

func longestRun(s string, r byte) int {
	best, cur := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == r {
			cur++
			best = max(best, cur)
		} else {
			cur = 0
		}
	}
	return best
}

// mdCell keeps a value inside its table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
