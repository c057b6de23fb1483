package reuse

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// lineEngine is a reuse.Engine for sessions that are plain loopback TCP connections to a
// server that reads and forgets: its reset, ping and reuse send nothing, so what the tests
// see is the pool's own rules.
type lineEngine struct{}

func (lineEngine) Key(*proxy.Startup) string { return "app" }
func (lineEngine) Adopt(context.Context, *proxy.Session, *proxy.Startup) (any, bool) {
	return struct{}{}, true
}
func (lineEngine) Reset(_ context.Context, _ net.Conn, state any, _ proxy.Tracker) (any, error) {
	return state, nil
}
func (lineEngine) Ping(context.Context, net.Conn, any) error { return nil }
func (lineEngine) Reuse(_ context.Context, conn net.Conn, _ any, _ *proxy.Startup) (*proxy.Session, error) {
	return &proxy.Session{Conn: conn}, nil
}
func (lineEngine) Close(conn net.Conn, _ any) { _ = conn.Close() }

// dialer is the pool's inner source: a new TCP session to its server on path, counted.
type dialer struct {
	addr   string
	path   atomic.Value // string
	logins atomic.Int32
}

func (d *dialer) Open(ctx context.Context, _ *proxy.Startup) (*proxy.Session, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	d.logins.Add(1)
	return &proxy.Session{Path: d.path.Load().(string), Conn: c}, nil
}

func startSink(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				var b [64]byte
				for {
					if _, err := c.Read(b[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

type poolRig struct {
	p    *Pool
	in   *dialer
	m    *Metrics
	down atomic.Value // string: the path that is down
	role atomic.Bool  // what the role check says
}

func newPoolRig(t *testing.T) *poolRig {
	r := &poolRig{in: &dialer{addr: startSink(t)}, m: NewMetrics(nil)}
	r.in.path.Store("a")
	r.down.Store("")
	r.role.Store(true)
	r.p = New(Config{
		Listener: "l", MaxIdle: 4, IdleTimeout: time.Minute, CheckAfter: 0,
		Best:     func() string { return r.in.path.Load().(string) },
		PathDown: func(path string) bool { return path == r.down.Load().(string) },
		Role: func(_ context.Context, _ string, _ net.Conn, _ any) (bool, error) {
			return r.role.Load(), nil
		},
		Metrics: r.m,
	}, lineEngine{}, r.in)
	t.Cleanup(r.p.Close)
	return r
}

// pooled opens a session and gives it back idle, as the relay does when its app leaves.
func (r *poolRig) pooled(t *testing.T) {
	t.Helper()
	want := r.p.Idle() + 1
	s, err := r.p.Open(context.Background(), &proxy.Startup{User: "app"})
	if err != nil {
		t.Fatal(err)
	}
	s.Release(s.Conn, nil, proxy.CloseClient)
	r.waitIdle(t, want)
}

func (r *poolRig) waitIdle(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for r.p.Idle() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions pooled, want %d", r.p.Idle(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *poolRig) discards(reason string) float64 {
	return testutil.ToFloat64(r.m.discards.WithLabelValues("l", reason))
}

// A pooled session whose instance answers another role at checkout is discarded (reason
// role) and the app gets a fresh login instead.
func TestCheckoutRoleMismatchDiscards(t *testing.T) {
	r := newPoolRig(t)
	r.pooled(t)
	r.role.Store(false)
	s, err := r.p.Open(context.Background(), &proxy.Startup{User: "app"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Conn.Close()
	if got := r.discards(ReasonRole); got != 1 {
		t.Fatalf("role discards = %v, want 1", got)
	}
	if n := r.in.logins.Load(); n != 2 {
		t.Fatalf("%d logins, want 2 (the first, and the fresh one after the mismatch)", n)
	}
	if hits := testutil.ToFloat64(r.m.checkouts.WithLabelValues("l", "hit")); hits != 0 {
		t.Fatalf("%v hits: a session of the wrong role was handed out", hits)
	}
	// With the role right again, a pooled session is a hit.
	r.role.Store(true)
	s.Release(s.Conn, nil, proxy.CloseClient)
	r.waitIdle(t, 1)
	s2, err := r.p.Open(context.Background(), &proxy.Startup{User: "app"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Conn.Close()
	if hits := testutil.ToFloat64(r.m.checkouts.WithLabelValues("l", "hit")); hits != 1 {
		t.Fatalf("%v hits, want 1", hits)
	}
}

// The server's evictions reach the pool (proxy.PathEvicter): a path down is path_down, any
// other eviction (failover, lag, a fallback over) evicted; a path that is down loses its
// pooled sessions at the pool's tick even before the server moves anything.
func TestEvictPathReasons(t *testing.T) {
	r := newPoolRig(t)
	r.pooled(t)
	r.p.EvictPath("a", proxy.CloseFailover)
	r.pooled(t)
	r.p.EvictPath("a", proxy.ClosePathDown)
	r.pooled(t)
	r.p.EvictPath("other", proxy.CloseLagging)
	if r.p.Idle() != 1 {
		t.Fatalf("an eviction of another path took this one's session: %d idle", r.p.Idle())
	}
	r.down.Store("a")
	r.p.Start(10 * time.Millisecond)
	r.waitIdle(t, 0)
	deadline := time.Now().Add(5 * time.Second)
	for r.discards(ReasonPathDown) != 2 || r.discards(ReasonEvicted) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("discards path_down %v evicted %v, want 2 and 1", r.discards(ReasonPathDown), r.discards(ReasonEvicted))
		}
		time.Sleep(time.Millisecond)
	}
}

// gatedEngine is a lineEngine whose resets, on a goroutine (Reset) or in the relay loop
// (LoopReset), finish only when the test says.
type gatedEngine struct {
	lineEngine
	gate chan struct{}
}

func (e gatedEngine) Reset(_ context.Context, _ net.Conn, state any, _ proxy.Tracker) (any, error) {
	<-e.gate
	return state, nil
}

// loopEngine is a lineEngine whose reset the relay loop runs: any one byte answers it.
type loopEngine struct{ lineEngine }

func (loopEngine) LoopReset(state any, _ proxy.Tracker) ([]byte, func([]byte) (bool, any, error)) {
	return []byte("reset"), func(p []byte) (bool, any, error) { return len(p) > 0, state, nil }
}

// A session whose reset is under way when its path is evicted (a failover, a lagging reader)
// is not pooled after the reset: the eviction could not reach it, so the pool remembers it.
func TestEvictionDuringResetIsNotMissed(t *testing.T) {
	for _, inLoop := range []bool{false, true} {
		r := newPoolRig(t)
		gate := make(chan struct{})
		if inLoop {
			r.p.eng = loopEngine{}
		} else {
			r.p.eng = gatedEngine{gate: gate}
		}
		open := func() *proxy.Session {
			s, err := r.p.Open(context.Background(), &proxy.Startup{User: "app"})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		// release gives the session back as the relay does, with an eviction of its path while
		// the reset runs when evict is set.
		release := func(s *proxy.Session, evict bool) {
			if inLoop {
				if req, _ := s.Reset.ResetRequest(nil); req == nil {
					t.Fatal("the loop engine's session has no reset for the loop")
				}
				if evict {
					r.p.EvictPath("a", proxy.CloseFailover)
				}
				if done, ok := s.Reset.ResetReply([]byte("ok")); !done || !ok {
					t.Fatalf("reset answer: done %v ok %v", done, ok)
				}
				s.Release(s.Conn, nil, proxy.CloseClient)
				return
			}
			s.Release(s.Conn, nil, proxy.CloseClient)
			if evict {
				r.p.EvictPath("a", proxy.CloseFailover)
			}
			gate <- struct{}{}
		}
		s := open()
		release(s, true)
		deadline := time.Now().Add(5 * time.Second)
		for r.discards(ReasonEvicted) != 1 {
			if time.Now().After(deadline) {
				t.Fatalf("in loop %v: evicted discards %v, want 1", inLoop, r.discards(ReasonEvicted))
			}
			time.Sleep(time.Millisecond)
		}
		if r.p.Idle() != 0 {
			t.Fatalf("in loop %v: a session reset across an eviction was pooled", inLoop)
		}
		// Without an eviction, the next one is pooled as usual.
		release(open(), false)
		r.waitIdle(t, 1)
	}
}
