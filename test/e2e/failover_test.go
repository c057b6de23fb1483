package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/faultnet"
)

// Probe pacing for the failover tests: fast enough to keep the suite short, slow enough for
// a TLS handshake on a loaded CI machine.
const (
	probeInterval = 500 * time.Millisecond
	probeFall     = 2
	probeTimeout  = 400 * time.Millisecond
	probeRise     = 2
	killGrace     = 2 * time.Second
)

var pathNames = []string{"privatelink", "rds-proxy", "instance"}

// multiPath is a sidecar in front of the stand-in over three toxiproxy paths.
type multiPath struct {
	w   *testWorld
	net *faultnet.Net
	s   *sidecar
}

func startMultiPath(t *testing.T) *multiPath {
	t.Helper()
	w := startWorld(t)
	n, err := faultnet.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	var paths strings.Builder
	for _, name := range pathNames {
		addr, err := n.AddPath(name, "", w.StandinAddr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&paths, "      - {name: %s, address: %q, tls_server_name: %q, token_host: %q}\n", name, addr, w.ServerName, w.TokenHost)
	}
	cfg := fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
shutdown: {max_delay: 10s, kill_grace: %s}
listeners:
  - name: pg
    listen: "{{PG}}"
    connect_timeout: 6s
    tls: {ca_file: %q}
    health: {interval: %s, timeout: %s, tls_interval: %s, rise: %d, fall: %d}
    paths:
%s`, w.Region, killGrace, w.CAFile, probeInterval, probeTimeout, probeInterval, probeRise, probeFall, paths.String())
	return &multiPath{w: w, net: n, s: startSidecar(t, cfg, w.SidecarEnv)}
}

type pathReport struct {
	Listener string `json:"listener"`
	Paths    []struct {
		Name      string `json:"name"`
		State     string `json:"state"`
		Preferred bool   `json:"preferred"`
		LastError string `json:"last_error"`
		Successes uint64 `json:"successes"`
	} `json:"paths"`
}

func (m *multiPath) paths(t *testing.T) pathReport {
	t.Helper()
	_, body, err := m.s.get("/paths")
	if err != nil {
		t.Fatal(err)
	}
	var r []pathReport
	if err := json.Unmarshal([]byte(body), &r); err != nil || len(r) != 1 {
		t.Fatalf("/paths: %v\n%s", err, body)
	}
	return r[0]
}

func (m *multiPath) waitState(t *testing.T, timeout time.Duration, path, state string) {
	t.Helper()
	waitFor(t, timeout, path+" "+state, func() error {
		for _, p := range m.paths(t).Paths {
			if p.Name == path {
				if p.State == state {
					return nil
				}
				return fmt.Errorf("%s is %s", path, p.State)
			}
		}
		return errors.New("no such path")
	})
}

// logins is how many sessions (not probes) logged in over path.
func (m *multiPath) logins(path string) float64 {
	v := m.s.metric("rdsvalet_proxy_upstream_login_duration_seconds_count", `path="`+path+`"`, `result="ok"`)
	return max(v, 0)
}

func (m *multiPath) connect(t *testing.T) *pgx.Conn { return connect(t, m.s, "app") }

func TestFailoverAndFailback(t *testing.T) {
	m := startMultiPath(t)
	faults := []struct {
		name  string
		apply func() error
	}{
		{"down", func() error { return m.net.Cut("privatelink") }},
		{"reset_peer", func() error {
			return m.net.Toxic("privatelink", "reset_peer", toxiclient.Attributes{"timeout": 0})
		}},
		{"blackhole", func() error { return m.net.Toxic("privatelink", "timeout", toxiclient.Attributes{"timeout": 0}) }},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			m.waitState(t, 10*time.Second, "privatelink", "up")
			before := m.logins("privatelink")
			idle := m.connect(t)
			busy := m.connect(t)
			if m.logins("privatelink") != before+2 {
				t.Fatalf("sessions did not start on the preferred path (logins %v -> %v)", before, m.logins("privatelink"))
			}
			mustExec(t, busy, "CREATE TEMP TABLE t (n int)")
			tx, err := busy.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(context.Background(), "INSERT INTO t VALUES (1)"); err != nil {
				t.Fatal(err)
			}
			// An idle session ends either because the sidecar evicts it (path_down) or, when the
			// fault drops connections itself, because the upstream went away.
			closedOffPath := func() float64 {
				return max(m.s.metric("rdsvalet_proxy_sessions_closed_total", `reason="path_down"`), 0) +
					max(m.s.metric("rdsvalet_proxy_sessions_closed_total", `reason="upstream"`), 0)
			}
			closedBefore := closedOffPath()

			if err := f.apply(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.net.Restore("privatelink") })
			cut := time.Now()
			// Detection: fall probes, each of which may wait out its timeout (a blackhole answers
			// nothing), at probe intervals, plus a second of slack.
			bound := (probeInterval+probeTimeout)*probeFall + time.Second
			m.waitState(t, 15*time.Second, "privatelink", "down")
			detected := time.Since(cut)
			// Idle sessions on the dead path are closed at once.
			waitFor(t, 15*time.Second, "idle session closed", func() error {
				if v := closedOffPath(); v < closedBefore+1 {
					return fmt.Errorf("sessions closed off the path: %v", v)
				}
				return nil
			})
			if closedAt := time.Since(cut); closedAt > bound {
				t.Errorf("idle session closed %v after the cut, want within %v (detected after %v)", closedAt, bound, detected)
			}
			// New connections go to the next path at once.
			other := m.logins("rds-proxy")
			fresh := m.connect(t)
			mustExec(t, fresh, "SELECT 1")
			if m.logins("rds-proxy") != other+1 {
				t.Fatalf("new connection did not land on rds-proxy")
			}
			// The idle app session sees a closed connection, not a hang.
			ictx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err = idle.Exec(ictx, "SELECT 1")
			cancel()
			if err == nil {
				t.Fatal("idle session on the dead path still works")
			}
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("idle session on the dead path hung instead of failing fast")
			}
			// It says why: evicted from the dead path, or its upstream connection lost with
			// the fault, either way a connection-class error naming the path.
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "08006" || !strings.Contains(pgErr.Message, `path "privatelink"`) {
				t.Errorf("idle session's error: %v; want FATAL 08006 from the sidecar naming the path", err)
			}
			// The transaction in flight completes or fails clearly within kill_grace; never hangs.
			cctx, cancel := context.WithTimeout(context.Background(), killGrace+5*time.Second)
			err = tx.Commit(cctx)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatal("transaction on the dead path hung past kill_grace")
			}
			t.Logf("%s: detected after %v; commit: %v", f.name, detected, err)

			if err := m.net.Restore("privatelink"); err != nil {
				t.Fatal(err)
			}
			m.waitState(t, 15*time.Second, "privatelink", "up")
			back := m.logins("privatelink")
			again := m.connect(t)
			mustExec(t, again, "SELECT 1")
			if m.logins("privatelink") != back+1 {
				t.Fatal("new connections did not fail back to privatelink")
			}
		})
	}
	if v := m.s.metric("rdsvalet_health_path_switches_total", `to="rds-proxy"`); v < float64(len(faults)) {
		t.Errorf("switches to rds-proxy = %v, want >= %d", v, len(faults))
	}
	if v := m.s.metric("rdsvalet_health_probe_failures_total", `path="privatelink"`); v < 1 {
		t.Errorf("probe failures not counted: %v", v)
	}
}

func TestAllPathsDown(t *testing.T) {
	m := startMultiPath(t)
	warm := m.connect(t)
	mustExec(t, warm, "SELECT 1")
	warm.Close(context.Background())
	for _, p := range pathNames {
		if err := m.net.Cut(p); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := net.SplitHostPort(m.s.pgAddr)
	dsn := fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable connect_timeout=10", host, port)
	start := time.Now()
	_, err := pgx.Connect(context.Background(), dsn)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08001" {
		t.Fatalf("want 08001, got %v", err)
	}
	for _, p := range pathNames {
		if !strings.Contains(pgErr.Message, p+":") {
			t.Errorf("error does not name path %s: %s", p, pgErr.Message)
		}
	}
	if d := time.Since(start); d > 7*time.Second {
		t.Errorf("answered after %v, beyond the connect timeout", d)
	}
	goroutines := m.s.metric("go_goroutines")
	fds := m.s.metric("process_open_fds")
	for i := range 1000 {
		c, err := net.DialTimeout("tcp", m.s.pgAddr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(startupPacket("user", "app", "database", "app")); err != nil {
			t.Fatal(err)
		}
		code, _, err := readErrorResponse(c)
		c.Close()
		if err != nil || code != "08001" {
			t.Fatalf("attempt %d: %s %v", i, code, err)
		}
	}
	// Every connection goroutine and fd is gone once the attempts are answered.
	waitFor(t, 10*time.Second, "no leak", func() error {
		g, f := m.s.metric("go_goroutines"), m.s.metric("process_open_fds")
		if g > goroutines+5 || f > fds+5 {
			return fmt.Errorf("goroutines %v (was %v), fds %v (was %v)", g, goroutines, f, fds)
		}
		return nil
	})
}

// TestLoginProbesAndHealthyPathReadiness runs login probes (a full IAM login and SELECT 1) and
// the readiness policy that follows path health: /readyz turns 503 when no path is healthy and
// 200 again when one recovers.
func TestLoginProbesAndHealthyPathReadiness(t *testing.T) {
	w := startWorld(t)
	n, err := faultnet.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	addr, err := n.AddPath("only", "", w.StandinAddr)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
admin: {listen: "{{ADMIN}}", readiness: healthy-path}
aws: {region: %s}
listeners:
  - name: pg
    listen: "{{PG}}"
    tls: {ca_file: %q}
    health: {interval: 500ms, timeout: 500ms, rise: 1, fall: 2, login_interval: 500ms, login_user: app}
    paths:
      - {name: only, address: %q, tls_server_name: %q, token_host: %q}
`, w.Region, w.CAFile, addr, w.ServerName, w.TokenHost)
	s := startSidecar(t, cfg, w.SidecarEnv)
	ready := func() int {
		code, _, err := s.get("/readyz")
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	waitFor(t, 10*time.Second, "login probes", func() error {
		if v := s.metric("rdsvalet_health_probe_duration_seconds_count", `kind="login"`); v < 2 {
			return fmt.Errorf("%v login probes", v)
		}
		return nil
	})
	if got := w.StandinLoginsOK(); got < 2 {
		t.Fatalf("the stand-in saw %d logins from probes", got)
	}
	if v := s.metric("rdsvalet_health_last_login_timestamp_seconds", `path="only"`); v <= 0 {
		t.Errorf("last login timestamp %v", v)
	}
	if c := ready(); c != 200 {
		t.Fatalf("/readyz %d with a healthy path", c)
	}
	if err := n.Cut("only"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "not ready", func() error {
		if c := ready(); c != 503 {
			return fmt.Errorf("/readyz %d", c)
		}
		return nil
	})
	if err := n.Restore("only"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ready again", func() error {
		if c := ready(); c != 200 {
			return fmt.Errorf("/readyz %d", c)
		}
		return nil
	})
}
