package sidecar

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/config"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/topology"
)

// refusedAddr is a loopback address nothing listens on: every login there fails at once.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// testConfig is a sidecar with a Postgres and a MySQL listener whose one path refuses
// connections, password auth, the admin server on a random port, probes too slow to run.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Admin.Listen = "127.0.0.1:0"
	cfg.Admin.Readiness = config.ReadyWhenHealthy
	cfg.Shutdown.MaxDelay = 5 * time.Second
	for _, engine := range []string{config.EnginePostgres, config.EngineMySQL} {
		cfg.Listeners = append(cfg.Listeners, config.Listener{
			Name: engine, Engine: engine, Listen: "127.0.0.1:0", MaxConnections: 10,
			HandshakeTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second,
			Auth:   config.Auth{Mode: config.AuthPassword, PasswordFile: pw},
			TLS:    config.TLS{Mode: config.TLSVerifyFull},
			Health: config.Health{Interval: time.Hour, Timeout: time.Second, Rise: 1, Fall: 1},
			Paths:  []config.Path{{Name: "db", Address: refusedAddr(t), TLSServerName: "db.test", TokenHost: "db.test:5432"}},
		})
	}
	return &cfg
}

func newSidecar(t *testing.T, cfg *config.Config) *Sidecar {
	t.Helper()
	s, err := New(context.Background(), cfg, Deps{Log: zaptest.NewLogger(t), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The assembly wires each listener's three steps: a Postgres app's startup is read, the path
// source tries the configured path and the app hears why it failed in its own protocol; a
// MySQL app is greeted before anything is dialed.
func TestNewWiresEveryListener(t *testing.T) {
	s := newSidecar(t, testConfig(t))
	done := make(chan int)
	go func() { done <- s.Run(context.Background()) }()
	defer func() { s.Quit(); <-done }()

	c, err := net.Dial("tcp", s.Addr(config.EnginePostgres).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "app"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok || er.Code != "08001" || !strings.Contains(er.Message, `no upstream path worked: db: dial`) {
		t.Fatalf("postgres app got %#v, want 08001 naming the refused path", msg)
	}
	if err := s.Ready(); err == nil || !strings.Contains(err.Error(), "no healthy path") {
		t.Fatalf("Ready() = %v after the only path failed (fall 1), want no healthy path", err)
	}

	m, err := net.Dial("tcp", s.Addr(config.EngineMySQL).String())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_ = m.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 5)
	if _, err := bufio.NewReader(m).Read(hdr); err != nil || hdr[3] != 0 || hdr[4] != 10 {
		t.Fatalf("mysql app: greeting header %v, %v; want protocol 10 with sequence 0", hdr, err)
	}
	if s.Addr("nope") != nil {
		t.Fatal("Addr of an unknown listener is not nil")
	}

	rep := s.PathsReport()
	if len(rep) != 2 || rep[0].Listener != "postgres" || rep[0].Paths[0].State != "down" || rep[1].Paths[0].State != "up" || rep[0].Warning != "" {
		t.Fatalf("paths report %+v", rep)
	}
}

// Run serves the admin endpoints; a quit (what /quitquitquit and SIGTERM do) turns
// readiness 503 at once while the listeners stay open for min_delay, then closes them and
// returns the clean-drain code.
func TestRunDrainsOnQuit(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Readiness = config.ReadyWhenUp
	cfg.Shutdown.MinDelay = 3 * time.Second
	s := newSidecar(t, cfg)
	code := make(chan int, 1)
	go func() { code <- s.Run(context.Background()) }()
	base := "http://" + s.AdminAddr().String()
	waitFor(t, "startupz 200", func() bool { return status(base+"/startupz") == http.StatusOK })
	if got := status(base + "/readyz"); got != http.StatusOK {
		t.Fatalf("readyz %d before the drain", got)
	}
	pgAddr := s.Addr(config.EnginePostgres).String()
	s.Quit()
	s.Quit() // twice is harmless
	waitFor(t, "readiness to report draining", func() bool { return errors.Is(s.Ready(), ErrDraining) })
	if got := status(base + "/readyz"); got != http.StatusServiceUnavailable {
		t.Fatalf("readyz %d while draining, want 503", got)
	}
	c, err := net.Dial("tcp", pgAddr)
	if err != nil {
		t.Fatalf("listener closed during min_delay: %v", err)
	}
	_ = c.Close()
	select {
	case got := <-code:
		if got != ExitOK {
			t.Fatalf("Run = %d, want %d (nothing to cut)", got, ExitOK)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
	if c, err := net.Dial("tcp", pgAddr); err == nil {
		_ = c.Close()
		t.Fatal("listener still open after Run returned")
	}
}

// A listener that cannot be bound fails New with its name, and leaves nothing bound: the
// listeners before it and the admin port are free again.
func TestNewLeavesNothingBoundOnError(t *testing.T) {
	cfg := testConfig(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	first, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	firstAddr := first.Addr().String()
	_ = first.Close()
	cfg.Listeners[0].Listen = firstAddr
	cfg.Listeners[1].Listen = taken.Addr().String()
	_, err = New(context.Background(), cfg, Deps{Log: zap.NewNop()})
	if err == nil || !strings.Contains(err.Error(), "listener mysql:") {
		t.Fatalf("New = %v, want an error naming listener mysql", err)
	}
	again, err := net.Listen("tcp", firstAddr)
	if err != nil {
		t.Fatalf("the first listener's address is still bound: %v", err)
	}
	_ = again.Close()
}

func TestCheckBound(t *testing.T) {
	for _, tc := range []struct {
		ip    string
		allow bool
		ok    bool
	}{
		{"127.0.0.1", false, true}, {"::1", false, true}, {"10.1.2.3", false, false}, {"10.1.2.3", true, true}, {"0.0.0.0", false, false},
	} {
		err := checkBound(&net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 5432}, tc.allow)
		if (err == nil) != tc.ok {
			t.Errorf("checkBound(%s, allow %v) = %v", tc.ip, tc.allow, err)
		}
		if err != nil && !strings.Contains(err.Error(), "set allow_non_loopback") {
			t.Errorf("error %q does not say how to allow it", err)
		}
	}
}

// The secret is chosen per listener: the password file's content, or an IAM token signed for
// the path's token host (not its dialed address) and the app's user.
func TestSecretFor(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := health.Path{Name: "privatelink", Address: "vpce-1.example:5432", TokenHost: "proxy.example:5432"}
	got, err := secretFor(config.Listener{Auth: config.Auth{Mode: config.AuthPassword, PasswordFile: pw}}, nil, "")(context.Background(), path, "app")
	if err != nil || got != "s3cret" {
		t.Fatalf("password secret = %q, %v", got, err)
	}
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
		return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "x", CanExpire: false}, nil
	})
	tokens := auth.NewTokenCache(auth.TokenCacheConfig{}, creds, zap.NewNop(), prometheus.NewRegistry())
	tok, err := secretFor(config.Listener{Auth: config.Auth{Mode: config.AuthIAM}}, tokens, "eu-west-1")(context.Background(), path, "app")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "proxy.example:5432?") || !strings.Contains(tok, "DBUser=app") || !strings.Contains(tok, "eu-west-1") {
		t.Fatalf("IAM token %q is not signed for the token host, user and region", tok)
	}
}

func TestPprofOnlyOnLoopback(t *testing.T) {
	if _, err := StartPprof("0.0.0.0:0", zap.NewNop()); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("pprof on 0.0.0.0: %v, want refused", err)
	}
	addr, err := StartPprof("127.0.0.1:0", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if got := status("http://" + addr.String() + "/debug/pprof/"); got != http.StatusOK {
		t.Fatalf("pprof index: %d", got)
	}
}

func TestPathsReportIsJSON(t *testing.T) {
	cfg := testConfig(t)
	cfg.Listeners[1].TLS.Mode = config.TLSInsecure
	s := newSidecar(t, cfg)
	defer s.Close()
	b, err := json.Marshal(s.PathsReport())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"warning":"upstream TLS certificates are NOT verified`) || !strings.Contains(string(b), `"tls_mode":"verify-full"`) {
		t.Fatalf("report %s", b)
	}
}

func status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling an observable state, bounded by the deadline
	}
}

// Under the healthy-path policy a cluster writer listener without a writer for longer than
// its failover_window and connect_timeout is not ready, naming the listener; within them (a
// failover under way) and once a writer answers, it is. A reader listener without a writer,
// or the process policy, does not care.
func TestReadyNeedsAWriterPastTheFailoverWindow(t *testing.T) {
	cfg := testConfig(t)
	w := &cfg.Listeners[0]
	w.Name, w.Role = "rw", config.RoleWriter
	// Set as config's defaults would (the sidecar never runs here: the monitor only records).
	w.Cluster = config.Cluster{Discovery: config.DiscoveryStatic, RefreshInterval: time.Second,
		FailoverRefreshInterval: 100 * time.Millisecond, FailoverWindow: 600 * time.Millisecond}
	w.ConnectTimeout = 300 * time.Millisecond
	r := &cfg.Listeners[1]
	r.Engine, r.Name, r.Role = config.EnginePostgres, "ro", config.RoleReader
	r.Cluster = w.Cluster
	start := time.Now()
	s := newSidecar(t, cfg)
	defer s.Close()
	if err := s.Ready(); err != nil && time.Since(start) < 600*time.Millisecond {
		t.Fatalf("Ready() = %v within the failover window", err)
	}
	waitFor(t, "readiness to name the writer listener without a writer", func() bool {
		err := s.Ready()
		return err != nil && strings.Contains(err.Error(), "listener rw has had no writer for") &&
			strings.Contains(err.Error(), "failover_window")
	})
	if time.Since(start) < 600*time.Millisecond {
		t.Fatalf("not ready after %v, before the failover window ran out", time.Since(start))
	}
	// The writer answers (as the monitor's check records it): ready again.
	s.listeners[0].topo.Record("db", topology.Report{Role: topology.Writer, LagKnown: true}, nil, time.Millisecond)
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready() = %v with a writer", err)
	}
	s.listeners[0].topo.Record("db", topology.Report{Role: topology.Reader}, nil, time.Millisecond) // demoted: lost
	waitFor(t, "readiness to fail again once the writer has been lost past the window", func() bool {
		err := s.Ready()
		return err != nil && strings.Contains(err.Error(), "listener rw")
	})
	cfg.Admin.Readiness = config.ReadyWhenUp
	if err := s.Ready(); err != nil {
		t.Fatalf("process policy: Ready() = %v", err)
	}
}
