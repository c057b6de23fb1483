package e2e

// Kept probe sessions (health.ping): with the default health settings and a probe user, each
// path keeps one logged-in session that the sidecar pings every second, so a path that accepts
// TCP and then swallows every byte is marked down within a few ping timeouts, while a probe
// session the server ends is reopened without counting against the path. See docs/failover.md.

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"

	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/test/harness/mariadb"
)

// pingBlackholeBound is how long a blackhole may take to be marked down with the default
// ping settings: fall (2) ping timeouts after the first unanswered ping, itself at most a
// ping interval after the cut, plus slack for a loaded machine running the -race build. The
// TCP/TLS schedule alone takes up to tls_interval (10 s) + 2 TLS timeouts.
const pingBlackholeBound = config.DefaultPingInterval + 2*config.DefaultPingTimeout + 5*time.Second

func (s *sidecar) probeSessions(listener string) float64 {
	return s.metric("rdsvalet_health_probe_sessions", `listener="`+listener+`"`, `path="db"`)
}

// TestFaultPingBlackholeByDefault: default health settings plus a probe user; a blackhole
// on the path is marked down within pingBlackholeBound, by ping timeouts; once the path lets
// bytes through again a new probe session brings it back.
func TestFaultPingBlackholeByDefault(t *testing.T) {
	e := startFaultEnv(t, faultOptions{health: "{login_user: app}"})
	for _, l := range []string{"pg", "mysql"} {
		waitFor(t, 20*time.Second, l+" probe session kept", func() error {
			if v := e.s.probeSessions(l); v != 1 {
				return fmt.Errorf("rdsvalet_health_probe_sessions{listener=%q} = %v", l, v)
			}
			return nil
		})
	}
	waitFor(t, 20*time.Second, "pg path up", func() error { return pathIs(e.s, "pg", "db", "up") })
	if err := e.net.Toxic("pg", "timeout", toxiclient.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.net.Restore("pg") })
	cut := time.Now()
	waitFor(t, pingBlackholeBound, "the blackholed path marked down", func() error { return pathIs(e.s, "pg", "db", "down") })
	t.Logf("blackhole marked down after %v (bound %v)", time.Since(cut), pingBlackholeBound)
	if v := e.s.metric("rdsvalet_health_probe_failures_total", `listener="pg"`, `kind="ping"`, `reason="timeout"`); v < 1 {
		t.Errorf("ping timeouts = %v; the blackhole was not seen by the pings", v)
	}
	// The other listener's path is another toxiproxy path: untouched.
	if err := pathIs(e.s, "mysql", "db", "up"); err != nil {
		t.Error(err)
	}
	if err := e.net.Restore("pg"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the path back up with a new probe session", func() error {
		if err := pathIs(e.s, "pg", "db", "up"); err != nil {
			return err
		}
		if v := e.s.probeSessions("pg"); v != 1 {
			return fmt.Errorf("probe sessions = %v", v)
		}
		return nil
	})
	waitFor(t, 20*time.Second, "a new connection after the blackhole", func() error { return tryQuery(e.dsn(), "SELECT 1") })
}

// TestFaultPingSessionEndedByServer: the server ending the kept probe session
// (pg_terminate_backend, KILL: what an idle timeout does too) is no evidence against the path.
// With fall 1 a single counted failure would mark the path down; it stays up, nothing is
// counted, and a new session (another backend) replaces the old one each time.
func TestFaultPingSessionEndedByServer(t *testing.T) {
	e := startFaultEnv(t, faultOptions{health: "{login_user: app, rise: 1, fall: 1}"})
	pgBackend := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "postgres")
		if err != nil {
			return 0, err
		}
		defer c.Close(ctx)
		var pid int
		err = c.QueryRow(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = 'rds-valet-probe' AND state = 'idle' ORDER BY backend_start DESC LIMIT 1").Scan(&pid)
		return pid, err
	}
	pgKill := func(pid int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.w.PG.Connect(ctx, e.w.PG.Superuser(), "postgres")
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "SELECT pg_terminate_backend($1)", pid)
		return err
	}
	my, err := e.w.MariaDB.Open(mariadb.Superuser, "")
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	myBackend := func() (int, error) {
		var id int
		err := my.QueryRow("SELECT id FROM information_schema.processlist WHERE user = 'app' AND command = 'Sleep' ORDER BY id DESC LIMIT 1").Scan(&id)
		return id, err
	}
	myKill := func(id int) error { _, err := my.Exec(fmt.Sprintf("KILL %d", id)); return err }

	for _, c := range []struct {
		listener string
		backend  func() (int, error)
		kill     func(int) error
	}{{"pg", pgBackend, pgKill}, {"mysql", myBackend, myKill}} {
		l := c.listener
		var prev int
		for round := range 3 {
			var id int
			waitFor(t, 20*time.Second, fmt.Sprintf("%s probe session %d", l, round+1), func() error {
				if v := e.s.probeSessions(l); v != 1 {
					return fmt.Errorf("probe sessions = %v", v)
				}
				var err error
				if id, err = c.backend(); err != nil {
					return fmt.Errorf("no probe backend: %w", err)
				}
				if id == prev {
					return fmt.Errorf("still the ended backend %d", id)
				}
				return nil
			})
			if err := c.kill(id); err != nil {
				t.Fatal(err)
			}
			prev = id
		}
		// The third session was ended too: wait for its replacement to be pinged.
		waitFor(t, 20*time.Second, l+" probe session reopened", func() error {
			if id, err := c.backend(); err != nil || id == prev {
				return fmt.Errorf("backend %d (%v), ended %d", id, err, prev)
			}
			return nil
		})
		pings := e.s.metric("rdsvalet_health_probe_duration_seconds_count", `listener="`+l+`"`, `kind="ping"`)
		waitFor(t, 20*time.Second, l+" pings on the new session", func() error {
			if v := e.s.metric("rdsvalet_health_probe_duration_seconds_count", `listener="`+l+`"`, `kind="ping"`); v < pings+2 {
				return fmt.Errorf("%v pings", v)
			}
			return nil
		})
		if err := pathIs(e.s, l, "db", "up"); err != nil {
			t.Error(err)
		}
		if p, err := pathOf(e.s, l, "db"); err != nil || p.Failures != 0 {
			t.Errorf("%s path: %+v (%v), want no failure: an ended probe session is none", l, p, err)
		}
	}
	// And the paths still serve.
	c := connect(t, e.s, "app")
	mustExec(t, c, "SELECT 1")
	_ = c.Close(context.Background())
	db := openMy(t, e.s, nil)
	myExec(t, db, "DO 1")
	_ = db.Close()
}

// pathHealth is a path's entry in /paths.
type pathHealth struct {
	State     string `json:"state"`
	LastError string `json:"last_error"`
	Failures  uint64 `json:"failures"`
}

func pathOf(s *sidecar, listener, path string) (pathHealth, error) {
	_, body, err := s.get("/paths")
	if err != nil {
		return pathHealth{}, err
	}
	var r []struct {
		Listener string `json:"listener"`
		Paths    []struct {
			Name string `json:"name"`
			pathHealth
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return pathHealth{}, fmt.Errorf("/paths: %w", err)
	}
	for _, l := range r {
		for _, p := range l.Paths {
			if l.Listener == listener && p.Name == path {
				return p.pathHealth, nil
			}
		}
	}
	return pathHealth{}, fmt.Errorf("/paths has no %s/%s", listener, path)
}

// pathIs checks a path's state in /paths.
func pathIs(s *sidecar, listener, path, want string) error {
	p, err := pathOf(s, listener, path)
	if err != nil {
		return err
	}
	if p.State != want {
		return fmt.Errorf("%s/%s is %s (last error %q), want %s", listener, path, p.State, p.LastError, want)
	}
	return nil
}
