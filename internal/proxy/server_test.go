package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy/sockloop"
)

// lineProto is a minimal line protocol for testing the proxy alone: the app says "HELLO\n",
// the sidecar logs in upstream and answers "WELCOME\n"; then every app line is a request and
// every upstream line its response. A session is idle when every request has its response.
type lineProto struct{}

func (lineProto) Accept(_ context.Context, client net.Conn) (*Startup, error) {
	br := bufio.NewReader(client)
	line, err := br.ReadString('\n')
	if err != nil || line != "HELLO\n" {
		_ = client.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = client.Write([]byte("ERR bad hello\n"))
		return nil, &ClientError{Err: errors.New("bad hello")}
	}
	return &Startup{User: "app"}, nil
}

func (lineProto) Greet(client net.Conn, _ *Startup, s *Session) (*Upstream, error) {
	if _, err := client.Write([]byte("WELCOME\n")); err != nil {
		_ = s.Conn.Close()
		return nil, err
	}
	return &Upstream{Conn: s.Conn, Path: s.Path, Tracker: &lineTracker{}}, nil
}

func (lineProto) Reject(client net.Conn, _ *Startup, err error) {
	_, _ = client.Write([]byte("ERR " + err.Error() + "\n"))
}

func (lineProto) Refuse(_ context.Context, client net.Conn, reason error) {
	_, _ = client.Write([]byte("ERR " + reason.Error() + "\n"))
}

// dialSource logs in by dialing its one path, reporting to the path's health.
type dialSource struct{ set *health.Set }

func (d dialSource) Open(ctx context.Context, _ *Startup) (*Session, error) {
	p := d.set.Candidates()[0]
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", p.Address)
	if err != nil {
		d.set.ReportFailure(p.Name, err)
		return nil, &NoPathError{Attempts: []*PathError{{Path: p.Name, Err: err}}}
	}
	d.set.ReportSuccess(p.Name)
	return &Session{Path: p.Name, Conn: c}, nil
}

// newLineServer wires a server over set as the listener set does: sessions from the set's
// path, eviction when a path goes down, passive health from relayed sessions.
func newLineServer(cfg Config, set *health.Set, log *zap.Logger, m *Metrics) *Server {
	cfg.OnNetworkFailure = set.ReportFailure
	s := NewServer(cfg, lineProto{}, dialSource{set}, log, m)
	set.Watch(func(path string, st health.State) {
		if st == health.Down {
			s.EvictPath(path)
		}
	})
	return s
}

type lineTracker struct{ req, resp int }

var newline = []byte{'\n'}

func (t *lineTracker) FromClient(p []byte) { t.req += bytes.Count(p, newline) }
func (t *lineTracker) FromServer(p []byte) { t.resp += bytes.Count(p, newline) }
func (t *lineTracker) Idle() bool          { return t.req == t.resp }

// upstream answers "ok <line>" to every line, except "hold" which it answers when released.
type upstream struct {
	ln      net.Listener
	release chan struct{}
	held    chan struct{} // one value per "hold" received
	wg      sync.WaitGroup
}

func startUpstream(t *testing.T) *upstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{ln: ln, release: make(chan struct{}), held: make(chan struct{}, 16)}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "hold\n" {
						u.held <- struct{}{}
						<-u.release
					}
					if _, err := c.Write([]byte("ok " + line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); u.wg.Wait() })
	return u
}

// newLoops returns relay loops closed at the end of the test, after the servers it registers
// later (cleanups run last first).
func newLoops(t testing.TB) *sockloop.Loops {
	t.Helper()
	ls, err := sockloop.New(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ls.Close)
	return ls
}

type testServer struct {
	*Server
	paths *health.Set
	reg   *prometheus.Registry
	done  chan struct{}
}

func startServer(t *testing.T, up *upstream, cfg Config) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	set := health.NewSet("l", []health.Path{{Name: "p1", Address: up.ln.Addr().String()}}, health.Thresholds{Rise: 1, Fall: 1}, health.NewMetrics(reg))
	cfg.Name, cfg.Engine, cfg.Listen = "l", "line", "127.0.0.1:0"
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 5 * time.Second
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	cfg.Loops = newLoops(t)
	s := newLineServer(cfg, set, zaptest.NewLogger(t), NewMetrics(reg))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, paths: set, reg: reg, done: make(chan struct{})}
	go func() { _ = s.Serve(); close(ts.done) }()
	t.Cleanup(func() {
		s.Close()
		// Bounded, so that a listener left accepting fails the test with its message rather
		// than hanging it until go test's timeout.
		select {
		case <-ts.done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return ts
}

type appConn struct {
	net.Conn
	br *bufio.Reader
}

func dialApp(t *testing.T, s *testServer) (*appConn, string) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	a := &appConn{Conn: c, br: bufio.NewReader(c)}
	if _, err := c.Write([]byte("HELLO\n")); err != nil {
		t.Fatal(err)
	}
	line, _ := a.br.ReadString('\n')
	return a, line
}

func (a *appConn) ask(line string) (string, error) {
	if _, err := a.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	return a.br.ReadString('\n')
}

func (s *testServer) closed(reason string) float64 {
	return testutil.ToFloat64(s.m.closed.WithLabelValues("l", reason))
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRelayAndMaxConnections(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up, Config{MaxConnections: 2})
	a, w := dialApp(t, s)
	if w != "WELCOME\n" {
		t.Fatalf("greeting %q", w)
	}
	if got, err := a.ask("ping"); err != nil || got != "ok ping\n" {
		t.Fatalf("relay: %q %v", got, err)
	}
	b, _ := dialApp(t, s)
	_, refused := dialApp(t, s)
	if !strings.Contains(refused, ErrTooManyConnections.Error()) {
		t.Fatalf("third connection got %q", refused)
	}
	if got, err := b.ask("still here"); err != nil || got != "ok still here\n" {
		t.Fatalf("a refused connection harmed another: %q %v", got, err)
	}
	if v := testutil.ToFloat64(s.m.total.WithLabelValues("l", "line", ResultRefusedLimit)); v != 1 {
		t.Errorf("refused_limit = %v", v)
	}
	if v := testutil.ToFloat64(s.m.total.WithLabelValues("l", "line", ResultOK)); v != 2 {
		t.Errorf("ok = %v", v)
	}
}

func TestHandshakeTimeoutCutsSlowClient(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up, Config{HandshakeTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("HEL")) // never finishes its hello
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(got, "ERR") {
		t.Fatalf("slow client got %q, want an error before the close", got)
	}
	waitUntil(t, "connection released", func() bool { return s.ActiveSessions() == 0 })
}

func TestDrainClosesIdleWaitsForBusyAndCutsAtDeadline(t *testing.T) {
	up := startUpstream(t)
	s := startServer(t, up, Config{})
	idle, _ := dialApp(t, s)
	busy, _ := dialApp(t, s)
	if _, err := idle.ask("x"); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Write([]byte("hold\n")); err != nil {
		t.Fatal(err)
	}
	<-up.held

	s.StopAccepting()
	drained := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- s.Drain(ctx)
	}()
	// The idle session is closed at once.
	if _, err := idle.br.ReadString('\n'); err == nil {
		t.Fatal("idle session still open during drain")
	}
	// The busy one gets its answer, then is closed.
	close(up.release)
	if got, err := busy.br.ReadString('\n'); err != nil || got != "ok hold\n" {
		t.Fatalf("busy session lost its answer: %q %v", got, err)
	}
	if cut := <-drained; cut != 0 {
		t.Fatalf("drain cut %d sessions, want 0", cut)
	}
	if v := s.closed(CloseDrain); v != 2 {
		t.Errorf("drain closes = %v, want 2", v)
	}
}

func TestDrainDeadlineCutsBusy(t *testing.T) {
	up := startUpstream(t)
	defer close(up.release)
	s := startServer(t, up, Config{})
	busy, _ := dialApp(t, s)
	if _, err := busy.Write([]byte("hold\n")); err != nil {
		t.Fatal(err)
	}
	<-up.held
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if cut := s.Drain(ctx); cut != 1 {
		t.Fatalf("cut %d, want 1", cut)
	}
	if v := s.closed(CloseCut); v != 1 {
		t.Errorf("cut closes = %v", v)
	}
}

func TestEvictPathClosesIdleNowAndBusyAfterGrace(t *testing.T) {
	up := startUpstream(t)
	defer close(up.release)
	s := startServer(t, up, Config{KillGrace: 100 * time.Millisecond})
	idle, _ := dialApp(t, s)
	if _, err := idle.ask("x"); err != nil { // an answer proves the session is relaying
		t.Fatal(err)
	}
	busy, _ := dialApp(t, s)
	if _, err := busy.Write([]byte("hold\n")); err != nil {
		t.Fatal(err)
	}
	<-up.held
	s.paths.ReportFailure("p1", errors.New("probe failed")) // fall 1: the path goes down
	if _, err := idle.br.ReadString('\n'); err == nil {
		t.Fatal("idle session on the dead path still open")
	}
	if _, err := busy.br.ReadString('\n'); err == nil {
		t.Fatal("busy session on the dead path survived kill_grace")
	}
	waitUntil(t, "sessions released", func() bool { return s.ActiveSessions() == 0 })
	if v := s.closed(ClosePathDown); v != 2 {
		t.Errorf("path_down closes = %v, want 2", v)
	}
}

func TestNoPathErrorNamesEveryPath(t *testing.T) {
	e := &NoPathError{Attempts: []*PathError{{Path: "a", Err: errors.New("refused")}, {Path: "b", Err: errors.New("timeout")}}}
	if got := e.Error(); got != "no upstream path worked: a: refused; b: timeout" {
		t.Fatalf("%q", got)
	}
}

// keepingSource is a Source that keeps sessions of its own (as internal/reuse's pool does):
// it records what Server.Evict tells it.
type keepingSource struct {
	dialSource
	mu      sync.Mutex
	evicted []string
}

func (k *keepingSource) EvictPath(path, reason string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.evicted = append(k.evicted, path+":"+reason)
}

func (k *keepingSource) got() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.evicted...)
}

// Every eviction (a path down, a failover, a lagging reader) reaches the relayed sessions and
// the source's kept ones through the one call.
func TestEvictReachesTheSource(t *testing.T) {
	up := startUpstream(t)
	defer close(up.release)
	reg := prometheus.NewRegistry()
	set := health.NewSet("l", []health.Path{{Name: "p1", Address: up.ln.Addr().String()}}, health.Thresholds{Rise: 1, Fall: 1}, health.NewMetrics(reg))
	src := &keepingSource{dialSource: dialSource{set}}
	s := NewServer(Config{Name: "l", Engine: "line", Listen: "127.0.0.1:0", HandshakeTimeout: 5 * time.Second,
		ConnectTimeout: 5 * time.Second, KillGrace: time.Second, Loops: newLoops(t)}, lineProto{}, src, zaptest.NewLogger(t), NewMetrics(reg))
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(); close(done) }()
	t.Cleanup(func() { s.Close(); <-done })
	ts := &testServer{Server: s, paths: set, reg: reg}
	app, _ := dialApp(t, ts)
	if _, err := app.ask("x"); err != nil {
		t.Fatal(err)
	}
	s.Evict("p1", CloseFailover, true)
	if _, err := app.br.ReadString('\n'); err == nil {
		t.Fatal("the relayed idle session survived the eviction")
	}
	s.EvictPath("p2")
	s.Evict("p1", CloseLagging, false)
	want := []string{"p1:" + CloseFailover, "p2:" + ClosePathDown, "p1:" + CloseLagging}
	if got := src.got(); !slices.Equal(got, want) {
		t.Fatalf("the source was told %v, want %v", got, want)
	}
	if v := ts.closed(CloseFailover); v != 1 {
		t.Errorf("failover closes = %v, want 1", v)
	}
}

// The listeners accept outside Go's poller through a duplicate of each socket
// (sockloop.Listener): StopAccepting must close that too, or the kernel would keep taking
// connections that nobody accepts, and Serve would never return.
func TestStopAcceptingRefusesNewConnectionsOnBothSockets(t *testing.T) {
	up := startUpstream(t)
	sock := filepath.Join(t.TempDir(), "app.sock")
	s := startServer(t, up, Config{Unix: UnixSocket{Path: sock}})
	if _, greeting := dialApp(t, s); greeting != "WELCOME\n" {
		t.Fatalf("greeting %q over TCP", greeting)
	}
	uc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	_ = uc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := uc.Write([]byte("HELLO\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(uc).ReadString('\n'); err != nil || line != "WELCOME\n" {
		t.Fatalf("greeting %q, %v over the unix socket", line, err)
	}
	uc.Close()

	s.StopAccepting()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after StopAccepting")
	}
	if c, err := net.Dial("tcp", s.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the TCP listener still takes connections after StopAccepting")
	}
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Fatal("the unix socket still takes connections after StopAccepting")
	}
}
