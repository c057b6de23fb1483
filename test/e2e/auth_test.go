package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/pgserver"
	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// TestIRSARotationAndNoSecretsInLogs runs the sidecar on short-lived STS credentials, rotates
// the projected web-identity token file (the old token is revoked at STS), and checks that new
// logins keep working with credentials fetched with the new file, and that no token, key or
// password reaches the logs, /metrics or /paths.
func TestIRSARotationAndNoSecretsInLogs(t *testing.T) {
	logs := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := world.Start(ctx, world.Options{CredentialDuration: 5 * time.Second, Logf: func(f string, a ...any) { fmt.Fprintf(logs, f+"\n", a...) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	tw := &testWorld{World: w, StandinAddr: w.Address, ServerName: w.TLSServerName, SidecarEnv: w.Env, logs: logs}
	s := startSidecar(t, iamConfig(tw, ""), tw.SidecarEnv)

	query := func() error {
		host, port, _ := net.SplitHostPort(s.pgAddr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "SELECT 1")
		return err
	}
	if err := query(); err != nil {
		t.Fatal(err)
	}
	oldToken := w.WebIdentityToken
	if err := w.RotateWebIdentityToken(); err != nil {
		t.Fatal(err)
	}
	issuedBefore := len(w.STS.Issued())
	// Keep logging in until the sidecar has fetched credentials with the rotated file; every
	// login on the way must succeed.
	waitFor(t, 30*time.Second, "credentials from the rotated token", func() error {
		if err := query(); err != nil {
			t.Fatalf("login failed across the rotation: %v", err)
		}
		if n := len(w.STS.Issued()); n <= issuedBefore {
			return fmt.Errorf("still %d credentials issued", n)
		}
		return nil
	})
	if err := query(); err != nil {
		t.Fatalf("login with credentials from the rotated token: %v", err)
	}
	if f := w.STS.Failures(); f != 0 {
		t.Errorf("STS refused %d calls: the sidecar presented the revoked token", f)
	}

	_, metrics, _ := s.get("/metrics")
	_, paths, _ := s.get("/paths")
	s.signal(os.Interrupt)
	s.wait(20 * time.Second)
	secrets := []string{"X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Credential", oldToken, w.WebIdentityToken}
	for _, c := range w.STS.Issued() {
		secrets = append(secrets, c.SecretAccessKey, c.SessionToken)
	}
	for name, text := range map[string]string{"logs": s.logs.String(), "/metrics": metrics, "/paths": paths} {
		for _, sec := range secrets {
			if sec != "" && strings.Contains(text, sec) {
				t.Errorf("%s contains a secret (%.12s...)", name, sec)
			}
		}
	}
	if !strings.Contains(s.logs.String(), `"msg":"minted IAM token"`) {
		t.Error("debug logs do not show token mints: the scan above proves nothing")
	}
}

func TestPasswordModeSCRAMAndMD5(t *testing.T) {
	w := startWorld(t)
	ctx := ctxTimeout(t, time.Minute)
	for _, m := range []struct {
		user   string
		method pgserver.AuthMethod
	}{{"scram_user", pgserver.SCRAM}, {"md5_user", pgserver.MD5}} {
		t.Run(string(m.method), func(t *testing.T) {
			const password = "correct horse battery staple"
			if err := w.PG.CreatePasswordRole(ctx, m.user, password, m.method); err != nil {
				t.Fatal(err)
			}
			pwFile := filepath.Join(t.TempDir(), "password")
			if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := fmt.Sprintf(`
admin: {listen: "{{ADMIN}}"}
listeners:
  - name: pg
    listen: "{{PG}}"
    auth: {mode: password, password_file: %q}
    tls: {ca_file: %q}
    paths:
      - {name: direct, address: %q, tls_server_name: localhost}
`, pwFile, w.CAFile, w.PG.Addr())
			s := startSidecar(t, cfg, nil)
			c := connect(t, s, m.user)
			var user string
			var ssl bool
			if err := c.QueryRow(ctx, "SELECT current_user, ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&user, &ssl); err != nil {
				t.Fatal(err)
			}
			if user != m.user || !ssl {
				t.Fatalf("logged in as %q, ssl=%v", user, ssl)
			}
			// A wrong password is the database's refusal, relayed with its SQLSTATE.
			if err := os.WriteFile(pwFile, []byte("wrong"), 0o600); err != nil {
				t.Fatal(err)
			}
			host, port, _ := net.SplitHostPort(s.pgAddr)
			_, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s dbname=app sslmode=disable", host, port, m.user))
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
				t.Fatalf("wrong password: want 28P01, got %v", err)
			}
			if strings.Contains(s.logs.String(), password) {
				t.Fatal("the password reached the logs")
			}
		})
	}
}

func TestPlaintextBeforeTLSIsRefused(t *testing.T) {
	w := startWorld(t)
	s := startSidecar(t, iamConfig(w, ""), w.SidecarEnv)
	w.Standin.SetPlaintextAfterSSLResponse([]byte("Z\x00\x00\x00\x05I"))
	host, port, _ := net.SplitHostPort(s.pgAddr)
	dsn := fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable", host, port)
	_, err := pgx.Connect(ctxTimeout(t, 20*time.Second), dsn)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "08001" || !strings.Contains(pgErr.Message, "TLS") {
		t.Fatalf("want 08001 naming TLS, got %v", err)
	}
	if w.StandinLoginsOK() != 0 {
		t.Fatal("the sidecar logged in over a connection with injected plaintext")
	}
	w.Standin.SetPlaintextAfterSSLResponse(nil)
	c := connect(t, s, "app")
	mustExec(t, c, "SELECT 1")
}

// TestLocalPassword requires apps to present a local password to the sidecar (defence in
// depth), independent of the upstream IAM login.
func TestLocalPassword(t *testing.T) {
	w := startWorld(t)
	pwFile := filepath.Join(t.TempDir(), "local-password")
	if err := os.WriteFile(pwFile, []byte("pod-local-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSidecar(t, iamConfig(w, fmt.Sprintf("    local_password_file: %q", pwFile)), w.SidecarEnv)
	host, port, _ := net.SplitHostPort(s.pgAddr)
	ctx := ctxTimeout(t, 30*time.Second)
	for _, tc := range []struct {
		password string
		wantCode string
	}{{"pod-local-secret", ""}, {"wrong", "28P01"}, {"", "28P01"}} {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=app dbname=app sslmode=disable password='%s'", host, port, tc.password))
		if tc.wantCode == "" {
			if err != nil {
				t.Fatalf("right local password refused: %v", err)
			}
			mustExec(t, c, "SELECT 1")
			c.Close(ctx)
			continue
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != tc.wantCode {
			t.Fatalf("password %q: want %s, got %v", tc.password, tc.wantCode, err)
		}
	}
	if strings.Contains(s.logs.String(), "pod-local-secret") {
		t.Fatal("the local password reached the logs")
	}
}
