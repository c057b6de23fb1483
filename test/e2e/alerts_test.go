package e2e

// The chart's alerts and dashboard against a running sidecar: the PrometheusRule the chart
// renders is checked by promtool and unit-tested by `promtool test rules` on series scraped
// from the built sidecar before and during each fault the alerts name (test/harness/promseries
// turns the scrapes into promtool's input series). Every alert must fire on its fault and not
// in the scrape before it, nor on the other faults; every metric a dashboard query or an alert
// reads must be in a real scrape (kube-state-metrics' names, which no sidecar serves, only from
// an explicit list). promtool is Debian's prometheus package (hack/install-deps.sh).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"sigs.k8s.io/yaml"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/promseries"
	"github.com/rdsvalet/rds-valet/test/harness/repo"
)

// kubeStateMetrics are the series names the chart's queries may read that kube-state-metrics
// serves, not the sidecar.
var kubeStateMetrics = []string{"kube_pod_container_status_restarts_total"}

// The labels Prometheus adds to a sidecar's series when the chart's PodMonitor scrapes it.
var sidecarTarget = map[string]string{
	"namespace": "shop", "pod": "orders-6f7c9d-x2k4q", "container": inject.ContainerName,
	"endpoint": "rdsvalet-admin", "instance": "10.0.3.17:9090", "job": "rds-valet/rv-rds-valet-sidecars",
}

// Phases of every promtool case, one sample a minute: the scrape before the fault for
// healthySteps minutes, then the fault for faultSteps. Alerts are evaluated at the end of the
// healthy phase and alertEval into the fault, past the longest `for` (5m).
const (
	healthySteps = 10
	faultSteps   = 10
	alertEval    = 6 * time.Minute
)

// alertScenario is one fault: the scrapes around it and the alerts it must fire (each alert of
// the rule file not named here must stay silent).
type alertScenario struct {
	name           string
	before, during promseries.Scrape
	fires          map[string][]map[string]string // alert name to the label sets it fires with
}

func TestAlertsFireOnTheirFaults(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make deps` (hack/install-deps.sh installs Debian's prometheus package)")
	}
	dir := t.TempDir()
	rules := renderRules(t, filepath.Join(dir, "rules.yaml"))
	if out, err := exec.Command(promtool, "check", "rules", filepath.Join(dir, "rules.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}

	w := startWorld(t)
	fn, err := faultnet.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)
	var paths []string
	for _, name := range []string{"a", "b"} {
		addr, err := fn.AddPath(name, "", w.StandinAddr)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, fmt.Sprintf("      - {name: %s, address: %q, tls_server_name: %q, token_host: %q}", name, addr, w.ServerName, w.TokenHost))
	}
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
shutdown: {max_delay: 5s}
listeners:
  - name: pg
    engine: postgres
    listen: "{{PG}}"
    max_connections: 2
    handshake_timeout: 2s
    connect_timeout: 3s
    tls: {mode: verify-full, ca_file: %q}
    health: {interval: 1s, timeout: 1s, tls_interval: 1s, rise: 1, fall: 2}
    paths:
%s
`, w.Region, w.CAFile, strings.Join(paths, "\n"))
	s := startSidecar(t, cfg, w.SidecarEnv)
	restarts := 0.0 // what kube-state-metrics would count for the container
	scrape := func(s *sidecar) promseries.Scrape {
		t.Helper()
		_, body, err := s.get("/metrics")
		if err != nil {
			t.Fatal(err)
		}
		sc, err := promseries.Parse(body, sidecarTarget)
		if err != nil {
			t.Fatal(err)
		}
		ksm := map[string]string{"namespace": sidecarTarget["namespace"], "pod": sidecarTarget["pod"],
			"container": inject.ContainerName, "uid": "0d5c1f9e-7b3a-4c1e-9a51-2f5e8c6d4b10", "job": "kube-state-metrics"}
		sc[promseries.Series("kube_pod_container_status_restarts_total", ksm)] = promseries.Sample{Value: restarts, Counter: true}
		return sc
	}
	pathUp := func(s *sidecar, want map[string]float64) {
		t.Helper()
		waitFor(t, 20*time.Second, fmt.Sprintf("paths %v", want), func() error {
			for p, v := range want {
				if got := s.metric("rdsvalet_health_path_up", `path="`+p+`"`); got != v {
					return fmt.Errorf("path %s up = %v", p, got)
				}
			}
			return nil
		})
	}
	waitCount := func(s *sidecar, name, label string) {
		t.Helper()
		waitFor(t, 20*time.Second, name+" "+label, func() error {
			if v := s.metric(name, label); v < 1 {
				return fmt.Errorf("%s{%s} = %v", name, label, v)
			}
			return nil
		})
	}
	dsn := func(s *sidecar, user string) string {
		host, port, _ := net.SplitHostPort(s.pgAddr)
		return fmt.Sprintf("host=%s port=%s user=%s dbname=app sslmode=disable connect_timeout=10", host, port, user)
	}
	pgLabels := func(extra ...string) map[string]string {
		m := map[string]string{"namespace": sidecarTarget["namespace"], "pod": sidecarTarget["pod"]}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	withTarget := func(extra ...string) map[string]string {
		m := map[string]string{}
		for k, v := range sidecarTarget {
			m[k] = v
		}
		for i := 0; i+1 < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	c := connect(t, s, "app") // a healthy scrape has logins behind it
	mustExec(t, c, "SELECT 1")
	_ = c.Close(context.Background())
	waitNoSessions(t, s, 10*time.Second)
	var scenarios []alertScenario

	// Connections refused at the limit: max_connections (2) held, a third app connection.
	{
		before := scrape(s)
		held := []*pgx.Conn{connect(t, s, "app"), connect(t, s, "app")}
		if _, err := pgx.Connect(ctxTimeout(t, 15*time.Second), dsn(s, "app")); err == nil {
			t.Fatal("a third connection was accepted over max_connections 2")
		}
		waitCount(s, "rdsvalet_proxy_connections_total", `result="refused_limit"`)
		scenarios = append(scenarios, alertScenario{name: "refused at max_connections", before: before, during: scrape(s),
			fires: map[string][]map[string]string{"RdsValetConnectionsRefusedAtLimit": {pgLabels("listener", "pg")}}})
		for _, h := range held {
			_ = h.Close(context.Background())
		}
		waitNoSessions(t, s, 10*time.Second)
	}

	// The database refuses the login: a user it does not have.
	{
		before := scrape(s)
		_, err := pgx.Connect(ctxTimeout(t, 15*time.Second), dsn(s, "nosuchuser"))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28000" {
			t.Fatalf("login as a user the database lacks: want 28000, got %v", err)
		}
		waitCount(s, "rdsvalet_proxy_connections_total", `result="upstream_refused"`)
		scenarios = append(scenarios, alertScenario{name: "database refuses the login", before: before, during: scrape(s),
			fires: map[string][]map[string]string{"RdsValetLoginsRefusedByDatabase": {pgLabels("listener", "pg")}}})
	}

	// One path down, the other up.
	{
		pathUp(s, map[string]float64{"a": 1, "b": 1})
		before := scrape(s)
		if err := fn.Cut("a"); err != nil {
			t.Fatal(err)
		}
		pathUp(s, map[string]float64{"a": 0, "b": 1})
		scenarios = append(scenarios, alertScenario{name: "one path down", before: before, during: scrape(s),
			fires: map[string][]map[string]string{"RdsValetPathDown": {withTarget("listener", "pg", "path", "a")}}})
		if err := fn.Restore("a"); err != nil {
			t.Fatal(err)
		}
	}

	// No healthy path: both cut.
	{
		pathUp(s, map[string]float64{"a": 1, "b": 1})
		before := scrape(s)
		for _, p := range []string{"a", "b"} {
			if err := fn.Cut(p); err != nil {
				t.Fatal(err)
			}
		}
		pathUp(s, map[string]float64{"a": 0, "b": 0})
		scenarios = append(scenarios, alertScenario{name: "no healthy path", before: before, during: scrape(s),
			fires: map[string][]map[string]string{"RdsValetNoHealthyPath": {pgLabels("listener", "pg")}}})
		for _, p := range []string{"a", "b"} {
			if err := fn.Restore(p); err != nil {
				t.Fatal(err)
			}
		}
		pathUp(s, map[string]float64{"a": 1, "b": 1})
	}

	// No credentials: a fresh sidecar (nothing cached) whose web-identity token STS rejects.
	s2 := startSidecar(t, cfg, w.SidecarEnv)
	{
		before := scrape(s2)
		w.STS.RejectToken(w.WebIdentityToken)
		_, err := pgx.Connect(ctxTimeout(t, 15*time.Second), dsn(s2, "app"))
		w.STS.AcceptToken(w.WebIdentityToken)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28000" || !strings.Contains(pgErr.Message, "IAM auth token") {
			t.Fatalf("login with the token rejected at STS: want 28000 naming the IAM token, got %v", err)
		}
		waitCount(s2, "rdsvalet_auth_token_mints_total", `result="credentials_error"`)
		scenarios = append(scenarios, alertScenario{name: "no AWS credentials", before: before, during: scrape(s2),
			fires: map[string][]map[string]string{"RdsValetIAMTokenFailures": {pgLabels()}}})
		waitFor(t, 20*time.Second, "logins once STS accepts the token again", func() error { return tryQuery(dsn(s2, "app"), "SELECT 1") })
	}

	// The sidecar restarts: killed, and started again as the kubelet would.
	{
		before := scrape(s2)
		_ = s2.cmd.Process.Kill()
		<-s2.done
		s3 := startSidecar(t, cfg, w.SidecarEnv)
		restarts++
		during := scrape(s3)
		ksm := promseries.Series("kube_pod_container_status_restarts_total", map[string]string{
			"namespace": sidecarTarget["namespace"], "pod": sidecarTarget["pod"], "container": inject.ContainerName,
			"uid": "0d5c1f9e-7b3a-4c1e-9a51-2f5e8c6d4b10", "job": "kube-state-metrics"})
		if during[ksm].Value != before[ksm].Value+1 {
			t.Fatalf("restart counter %v -> %v", before[ksm].Value, during[ksm].Value)
		}
		fires := map[string]string{"container": inject.ContainerName, "job": "kube-state-metrics",
			"uid": "0d5c1f9e-7b3a-4c1e-9a51-2f5e8c6d4b10"}
		for k, v := range pgLabels() {
			fires[k] = v
		}
		scenarios = append(scenarios, alertScenario{name: "sidecar restarted", before: before, during: during,
			fires: map[string][]map[string]string{"RdsValetSidecarRestarting": {fires}}})
	}

	runPromtoolTests(t, promtool, dir, rules, scenarios)

	// Every metric the rules and the dashboard read exists in a real scrape.
	known := map[string]bool{}
	for _, sc := range scenarios {
		for n := range sc.during.Names() {
			known[n] = true
		}
		for n := range sc.before.Names() {
			known[n] = true
		}
	}
	var queries []string
	for _, r := range rules {
		queries = append(queries, r.Expr)
	}
	dashQueries := dashboardQueries(t)
	checkDashboardParses(t, promtool, dir, dashQueries)
	queries = append(queries, dashQueries...)
	for _, q := range queries {
		for _, n := range promseries.MetricNames(q) {
			if !known[n] && !slices.Contains(kubeStateMetrics, n) {
				t.Errorf("query %q reads %s, which no scrape of the sidecar holds (nor kube-state-metrics' list)", q, n)
			}
		}
	}
	if !t.Failed() {
		t.Logf("%d alert scenarios passed promtool; %d queries read only scraped metrics", len(scenarios), len(queries))
	}
}

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
