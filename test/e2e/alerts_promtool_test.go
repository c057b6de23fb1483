package e2e

// The chart side of the alert tests: the rendered PrometheusRule and dashboard, promtool's unit
// test file built from the scenarios' scrapes, and promtool runs.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rdsvalet/rds-valet/test/harness/promseries"
	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

// alertRule is what the test needs of one rule of the rendered PrometheusRule.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// chartHelm is the pinned helm of the chart tests (bin/helm, or $HELM).
func chartHelm(t *testing.T) (bin, chart string) {
	t.Helper()
	root := repo.Root(t)
	bin = os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(root, "bin", "helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm not found at %s (and HELM is not set): run `make helm` first", bin)
	}
	return bin, filepath.Join(root, "deploy", "helm", "rds-valet")
}

func helmTemplate(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, chart := chartHelm(t)
	home := t.TempDir()
	cmd := exec.Command(bin, append([]string{"template", "rv", chart, "--namespace", "rds-valet"}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
		"HELM_DATA_HOME="+home+"/data", "KUBECONFIG="+home+"/none")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("helm template %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	return out
}

// renderRules writes the spec of the chart's PrometheusRule (a Prometheus rule file) to file
// and returns its alerting rules.
func renderRules(t *testing.T, file string) []alertRule {
	t.Helper()
	out := helmTemplate(t, "--set", "monitoring.prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml")
	var obj struct {
		Kind string `json:"kind"`
		Spec struct {
			Groups []struct {
				Name  string      `json:"name"`
				Rules []alertRule `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	j, err := yaml.YAMLToJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(j, &obj); err != nil || obj.Kind != "PrometheusRule" {
		t.Fatalf("rendered rule: kind %q, %v\n%s", obj.Kind, err, out)
	}
	var raw struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := json.Unmarshal(j, &raw); err != nil {
		t.Fatal(err)
	}
	spec, err := yaml.JSONToYAML(raw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, spec, 0o644); err != nil {
		t.Fatal(err)
	}
	var rules []alertRule
	for _, g := range obj.Spec.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatal("the PrometheusRule holds no rules")
	}
	return rules
}

// promtool's unit test file (https://prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/).
type promtoolFile struct {
	RuleFiles          []string       `json:"rule_files"`
	EvaluationInterval string         `json:"evaluation_interval"`
	Tests              []promtoolCase `json:"tests"`
}

type promtoolCase struct {
	Name          string                    `json:"name"`
	Interval      string                    `json:"interval"`
	InputSeries   []promseries.InputSeries  `json:"input_series"`
	AlertRuleTest []promtoolAlertExpectancy `json:"alert_rule_test"`
}

type promtoolAlertExpectancy struct {
	EvalTime  string             `json:"eval_time"`
	Alertname string             `json:"alertname"`
	ExpAlerts []promtoolExpAlert `json:"exp_alerts"`
}

type promtoolExpAlert struct {
	ExpLabels      map[string]string `json:"exp_labels"`
	ExpAnnotations map[string]string `json:"exp_annotations"`
}

var labelRef = regexp.MustCompile(`\{\{ \$labels\.([a-z_]+) \}\}`)

// expand renders an annotation template for labels; only {{ $labels.x }} is supported, so that
// the expectation stays independent of Prometheus' template engine.
func expand(t *testing.T, alert, tmpl string, labels map[string]string) string {
	t.Helper()
	out := labelRef.ReplaceAllStringFunc(tmpl, func(ref string) string {
		v, ok := labels[labelRef.FindStringSubmatch(ref)[1]]
		if !ok {
			t.Errorf("%s: annotation %q names a label the alert does not carry", alert, ref)
		}
		return v
	})
	if strings.Contains(out, "{{") {
		t.Fatalf("%s: annotation %q uses templating beyond $labels", alert, tmpl)
	}
	return out
}

// runPromtoolTests writes one promtool case per scenario, each asserting every alert at the
// end of the healthy phase (silent) and during the fault (the scenario's alerts fire, with
// their labels and annotations; the others stay silent), and runs `promtool test rules`.
func runPromtoolTests(t *testing.T, promtool, dir string, rules []alertRule, scenarios []alertScenario) {
	t.Helper()
	file := promtoolFile{RuleFiles: []string{"rules.yaml"}, EvaluationInterval: "1m"}
	fired := map[string]bool{}
	for _, sc := range scenarios {
		c := promtoolCase{Name: sc.name, Interval: "1m", InputSeries: promseries.Phases(sc.before, sc.during, healthySteps, faultSteps)}
		for _, r := range rules {
			c.AlertRuleTest = append(c.AlertRuleTest, promtoolAlertExpectancy{
				EvalTime: fmt.Sprintf("%dm", healthySteps-1), Alertname: r.Alert, ExpAlerts: []promtoolExpAlert{}})
			exp := promtoolAlertExpectancy{EvalTime: (time.Duration(healthySteps)*time.Minute + alertEval).String(),
				Alertname: r.Alert, ExpAlerts: []promtoolExpAlert{}}
			for _, labels := range sc.fires[r.Alert] {
				fired[r.Alert] = true
				l := map[string]string{"alertname": r.Alert}
				for k, v := range labels {
					l[k] = v
				}
				for k, v := range r.Labels {
					l[k] = v
				}
				ann := map[string]string{}
				for k, v := range r.Annotations {
					ann[k] = expand(t, r.Alert, v, l)
				}
				exp.ExpAlerts = append(exp.ExpAlerts, promtoolExpAlert{ExpLabels: l, ExpAnnotations: ann})
			}
			c.AlertRuleTest = append(c.AlertRuleTest, exp)
		}
		for name := range sc.fires {
			if !slices.ContainsFunc(rules, func(r alertRule) bool { return r.Alert == name }) {
				t.Errorf("scenario %q expects alert %s, which the chart does not define", sc.name, name)
			}
		}
		file.Tests = append(file.Tests, c)
	}
	for _, r := range rules {
		if !fired[r.Alert] {
			t.Errorf("alert %s is fired by no scenario: add the fault it names", r.Alert)
		}
	}
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	testFile := filepath.Join(dir, "alerts_test.yaml")
	if err := os.WriteFile(testFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "test", "rules", testFile).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules (%s): %v\n%s", testFile, err, out)
	}
	t.Logf("promtool test rules: %s", strings.TrimSpace(string(out)))
}

// dashboardQueries renders the chart's dashboard and returns every panel query and every
// template variable's metric (label_values(metric{...}, label)).
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	out := helmTemplate(t, "--set", "monitoring.dashboard.enabled=true", "--show-only", "templates/dashboard.yaml")
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(out, &cm); err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(cm.Data["rds-valet-sidecar.json"]), &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var qs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			qs = append(qs, tg.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[a-z_]+\)$`)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)["query"].(string)
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Fatalf("template variable query %q: want label_values(metric, label)", q)
		}
		qs = append(qs, m[1])
	}
	if len(qs) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	return qs
}

// checkDashboardParses has promtool parse every dashboard query (as recording rules, with
// Grafana's variables given values).
func checkDashboardParses(t *testing.T, promtool, dir string, queries []string) {
	t.Helper()
	grafana := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m")
	type rec struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var recs []rec
	for i, q := range queries {
		recs = append(recs, rec{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafana.Replace(q)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recs}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "dashboard-queries.yaml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Fatalf("promtool does not parse a dashboard query: %v\n%s", err, out)
	}
}
