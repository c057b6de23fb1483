// Package promseries turns /metrics scrapes of a running process into the input series of a
// `promtool test rules` file, and names the metrics a PromQL expression reads. A test scrapes
// before and during a fault; the series hold the "before" values for the healthy phase, then
// the fault phase continues what the scrapes show: gauges keep their "during" value, counters
// keep growing at the rate seen between the two scrapes (the fault goes on), and a counter
// that went down (the process restarted) stays at its new value. Output is sorted, so the same
// scrapes give the same file.
package promseries

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Sample is one series of a scrape: its identity (name and labels, as PromQL writes it) and
// whether it is a counter (counters, histogram buckets, sums and counts).
type Sample struct {
	Value   float64
	Counter bool
}

// Scrape is one scrape: series text (`name{a="b"}`) to sample.
type Scrape map[string]Sample

// Parse reads a scrape in the Prometheus text format, adding extra labels to every series
// (the target labels Prometheus would add: namespace, pod, container, ...).
func Parse(body string, extra map[string]string) (Scrape, error) {
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse scrape: %w", err)
	}
	s := Scrape{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for k, v := range extra {
				labels[k] = v
			}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			add := func(n string, v float64, counter bool, more ...string) {
				ls := labels
				if len(more) > 0 {
					ls = map[string]string{}
					for k, v := range labels {
						ls[k] = v
					}
					ls[more[0]] = more[1]
				}
				s[Series(n, ls)] = Sample{Value: v, Counter: counter}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m.GetCounter().GetValue(), true)
			case dto.MetricType_GAUGE:
				add(name, m.GetGauge().GetValue(), false)
			case dto.MetricType_UNTYPED:
				add(name, m.GetUntyped().GetValue(), false)
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", float64(b.GetCumulativeCount()), true, "le", formatFloat(b.GetUpperBound()))
				}
				add(name+"_bucket", float64(h.GetSampleCount()), true, "le", "+Inf")
				add(name+"_sum", h.GetSampleSum(), true)
				add(name+"_count", float64(h.GetSampleCount()), true)
			case dto.MetricType_SUMMARY:
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					add(name, q.GetValue(), false, "quantile", formatFloat(q.GetQuantile()))
				}
				add(name+"_sum", sm.GetSampleSum(), true)
				add(name+"_count", float64(sm.GetSampleCount()), true)
			default:
				return nil, fmt.Errorf("parse scrape: %s has type %v, which promtool series cannot hold", name, f.GetType())
			}
		}
	}
	return s, nil
}

// Series writes name{labels} with labels sorted and values quoted as PromQL reads them.
func Series(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+strconv.Quote(labels[k]))
	}
	return name + "{" + strings.Join(parts, ", ") + "}"
}

// Names is the set of metric names (as PromQL sees them: histogram _bucket, _sum, _count) in s.
func (s Scrape) Names() map[string]bool {
	out := map[string]bool{}
	for series := range s {
		out[series[:strings.IndexByte(series, '{')]] = true
	}
	return out
}

// InputSeries is one entry of a promtool test's input_series.
type InputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

// Phases returns the input series for healthy steps of before followed by fault steps that
// continue from before to during (see the package comment). A series missing from a scrape is
// missing ("_") in its phase.
func Phases(before, during Scrape, healthy, fault int) []InputSeries {
	all := map[string]bool{}
	for k := range before {
		all[k] = true
	}
	for k := range during {
		all[k] = true
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]InputSeries, 0, len(keys))
	for _, k := range keys {
		vals := make([]string, 0, healthy+fault)
		b, inBefore := before[k]
		for range healthy {
			vals = append(vals, value(b.Value, inBefore))
		}
		d, inDuring := during[k]
		step := 0.0
		if d.Counter {
			switch {
			case !inBefore:
				step = d.Value // appeared with the fault: as if counted from 0 one step ago
			case d.Value >= b.Value:
				step = d.Value - b.Value
			}
		}
		for i := range fault {
			vals = append(vals, value(d.Value+float64(i)*step, inDuring))
		}
		out = append(out, InputSeries{Series: k, Values: strings.Join(vals, " ")})
	}
	return out
}

func value(v float64, present bool) string {
	if !present || math.IsNaN(v) || math.IsInf(v, 0) {
		return "_"
	}
	return formatFloat(v)
}

// formatFloat writes v without an exponent: promtool's series notation reads "1e+09+0x3" as an
// expansion, so an exponent's sign must not appear.
func formatFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

var (
	stringLit = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	matchers  = regexp.MustCompile(`\{[^}]*\}`)
	ranges    = regexp.MustCompile(`\[[^\]]*\]`)
	grouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ident     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	keywords  = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"inf": true, "nan": true, "Inf": true, "NaN": true}
)

// MetricNames returns the metric names a PromQL expression selects, sorted: the identifiers
// left once strings, label matchers, ranges and grouping clauses are removed that are neither
// keywords nor function calls. It is a reader for expressions that promtool has already
// accepted, not a parser.
func MetricNames(expr string) []string {
	e := stringLit.ReplaceAllString(expr, `""`)
	e = matchers.ReplaceAllString(e, " ")
	e = ranges.ReplaceAllString(e, " ")
	e = grouping.ReplaceAllString(e, " ")
	seen := map[string]bool{}
	for _, loc := range ident.FindAllStringIndex(e, -1) {
		name := e[loc[0]:loc[1]]
		if keywords[name] || (loc[0] > 0 && (e[loc[0]-1] == '$' || e[loc[0]-1] == '.' || (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9'))) {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function
		}
		seen[name] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
