package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestMySQLProbes runs TLS and login probes (greeting, SSLRequest, verified TLS, an IAM login
// and SELECT 1) against the MySQL stand-in, and checks that a path refusing the login is marked
// down by them.
func TestMySQLProbes(t *testing.T) {
	w := startMyWorld(t, "")
	s := startSidecar(t, w.config("    health: {interval: 500ms, timeout: 500ms, tls_interval: 500ms, rise: 1, fall: 2, login_interval: 600ms, login_user: app}"), w.env)
	waitFor(t, 15*time.Second, "TLS and login probes", func() error {
		tls := s.metric("rdsvalet_health_probe_duration_seconds_count", `path="standin"`, `kind="tls"`)
		login := s.metric("rdsvalet_health_probe_duration_seconds_count", `path="standin"`, `kind="login"`)
		if tls < 2 || login < 2 {
			return fmt.Errorf("tls %v, login %v probes", tls, login)
		}
		return nil
	})
	if v := s.metric("rdsvalet_health_probe_failures_total", `path="standin"`); v > 0 {
		t.Fatalf("%v probe failures against a healthy stand-in", v)
	}
	if w.standin.Stats().LoginsOK < 2 {
		t.Fatalf("the stand-in saw %d logins", w.standin.Stats().LoginsOK)
	}
	if v := s.metric("rdsvalet_health_path_up", `path="standin"`); v != 1 {
		t.Fatalf("path_up %v", v)
	}
}

// TestMySQLLoginProbeCatchesBadTokenHost points the token at the wrong host: TCP and TLS
// succeed, only the login probe sees the refusal, and the path goes down.
func TestMySQLLoginProbeCatchesBadTokenHost(t *testing.T) {
	w := startMyWorld(t, "")
	cfg := w.config("    health: {interval: 500ms, timeout: 500ms, rise: 1, fall: 2, login_interval: 500ms, login_user: app}")
	cfg = replaceOnce(t, cfg, fmt.Sprintf("token_host: %q", w.MySQLTokenHost), `token_host: "elsewhere.example.com:3306"`)
	s := startSidecar(t, cfg, w.env)
	waitFor(t, 15*time.Second, "path down from login probes", func() error {
		if v := s.metric("rdsvalet_health_path_up", `path="standin"`); v != 0 {
			return fmt.Errorf("path_up %v", v)
		}
		return nil
	})
	if v := s.metric("rdsvalet_health_probe_failures_total", `kind="login"`, `reason="auth"`); v < 2 {
		t.Errorf("login probe failures with reason auth: %v", v)
	}
}
