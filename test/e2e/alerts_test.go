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
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/internal/inject"
	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
	"github.com/rdsvalet/rds-valet/test/harness/promseries"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// kubeStateMetrics are the series names the chart's queries may read that kube-state-metrics
// serves, not the sidecar.
var kubeStateMetrics = []string{"kube_pod_container_status_restarts_total"}

// The labels Prometheus adds to a sidecar's series when the chart's PodMonitor scrapes it.
var sidecarTarget = map[string]string{
	"namespace": "shop", "pod": "orders-6f7c9d-x2k4q", "container": inject.ContainerName,
	"endpoint": "rdsvalet-admin", "instance": "10.0.3.17:9090", "job": "rds-valet/rv-rds-valet-sidecars",
}

// ksmRestartLabels are the labels of kube-state-metrics' restart counter for the pod's sidecar
// container. No kube-state-metrics runs here: the test counts the restarts it makes itself.
func ksmRestartLabels() map[string]string {
	return map[string]string{"namespace": sidecarTarget["namespace"], "pod": sidecarTarget["pod"],
		"container": inject.ContainerName, "uid": "0d5c1f9e-7b3a-4c1e-9a51-2f5e8c6d4b10", "job": "kube-state-metrics"}
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

	// The role may connect as any db user, so a login as a user the database lacks reaches the
	// database's own refusal (28000), which is what the refused-login alert is about.
	w := startWorldWith(t, world.Options{DBUsersAllowed: []string{"*"}})
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
		sc[promseries.Series("kube_pod_container_status_restarts_total", ksmRestartLabels())] = promseries.Sample{Value: restarts, Counter: true}
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
		ksm := promseries.Series("kube_pod_container_status_restarts_total", ksmRestartLabels())
		if during[ksm].Value != before[ksm].Value+1 {
			t.Fatalf("restart counter %v -> %v", before[ksm].Value, during[ksm].Value)
		}
		scenarios = append(scenarios, alertScenario{name: "sidecar restarted", before: before, during: during,
			fires: map[string][]map[string]string{"RdsValetSidecarRestarting": {ksmRestartLabels()}}})
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
