package health

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/internal/auth"
)

// Sessions move off a down path only when another path is up, once per outage: with every
// path down there is nowhere better to go, and the sessions stay.
func TestWatchMovesOnlyWhenAnotherPathIsUp(t *testing.T) {
	s := NewSet("pg", threePaths(), Thresholds{Rise: 1, Fall: 1}, nil)
	var moved []string
	s.WatchMoves(func(p string) { moved = append(moved, p) })
	fail := func(p string) { s.ReportFailure(p, errors.New("dial: connection refused")) }

	fail("privatelink")
	fail("privatelink") // already down: not told again
	if got := strings.Join(moved, " "); got != "privatelink" {
		t.Fatalf("moves %q after privatelink went down with two paths up, want privatelink once", got)
	}
	moved = nil
	fail("proxy")
	fail("instance") // the last path up goes down: nobody moves anywhere
	if got := strings.Join(moved, " "); got != "proxy" {
		t.Fatalf("moves %q; want proxy (instance was still up), and none once every path is down", got)
	}
	moved = nil
	s.ReportSuccess("instance") // instance back: the down paths' sessions may move now
	if got := strings.Join(moved, " "); got != "" {
		t.Fatalf("moves %q: privatelink and proxy were already told in this outage", got)
	}
	s.ReportSuccess("proxy")
	fail("proxy") // a new outage of proxy while instance is up
	if got := strings.Join(moved, " "); got != "proxy" {
		t.Fatalf("moves %q, want proxy for its new outage", got)
	}
}

// The last path to go down has nowhere to send its sessions, so they stay, also when another
// path comes back later: they are then ended only by their own evidence of death.
func TestWatchMovesNeverWhenNoPathWasUp(t *testing.T) {
	s := NewSet("pg", threePaths()[:2], Thresholds{Rise: 1, Fall: 1}, nil)
	var moved []string
	s.WatchMoves(func(p string) { moved = append(moved, p) })
	s.ReportFailure("proxy", errors.New("timeout")) // privatelink is up: proxy's sessions move
	s.ReportFailure("privatelink", errors.New("timeout"))
	s.ReportSuccess("proxy")
	if got := strings.Join(moved, " "); got != "proxy" {
		t.Fatalf("moves %q, want proxy only: privatelink went down with no path up", got)
	}
}

// While probes run, a move waits for another path to pass a probe made when the path went
// down: a path that is up only because its failures have not been counted yet (every path slow
// at once) is nowhere better to go.
func TestWatchMovesVerifiesTheOtherPath(t *testing.T) {
	for _, tc := range []struct {
		name     string
		verify   error
		wantMove bool
	}{
		{"the other path passes", nil, true},
		{"the other path is slow too", context.DeadlineExceeded, false},
	} {
		s := NewSet("pg", threePaths()[:2], Thresholds{Rise: 1, Fall: 1}, nil)
		verified := make(chan string, 2)
		s.verify = func(p Path) error { verified <- p.Name; return tc.verify }
		moved := make(chan string, 1)
		s.WatchMoves(func(p string) { moved <- p })
		s.ReportFailure("privatelink", errors.New("timeout"))
		if got := <-verified; got != "proxy" {
			t.Fatalf("%s: verified %s, want proxy", tc.name, got)
		}
		if tc.wantMove {
			if got := <-moved; got != "privatelink" {
				t.Fatalf("%s: moved %s, want privatelink", tc.name, got)
			}
			continue
		}
		// verify returned before this point; a move, had it been made, follows at once.
		s.mu.Lock()
		s.mu.Unlock()
		select {
		case p := <-moved:
			t.Fatalf("%s: moved %s although no other path passed", tc.name, p)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// slowProber's TLS probe waits for its context: a probe that times out.
type slowProber struct{}

func (slowProber) ProbeTLS(ctx context.Context, _ Path) error {
	<-ctx.Done()
	return ctx.Err()
}
func (slowProber) ProbeLogin(ctx context.Context, p Path) error { return slowProber{}.ProbeTLS(ctx, p) }

// A probe that times out while the path's sessions are receiving data is a slow probe, not a
// dead path; with no data received, the same timeout counts.
func TestSlowProbeOnAPathCarryingDataIsNotCounted(t *testing.T) {
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 1}, nil)
	cfg := ProbeConfig{Timeout: 20 * time.Millisecond}
	s.SetReceived(func(string) time.Time { return time.Now() }) // data is flowing
	if err := s.ProbeNow(context.Background(), "a", KindTLS, slowProber{}, cfg); err == nil {
		t.Fatal("the probe did not time out")
	}
	if s.IsDown("a") {
		t.Fatal("a slow probe marked down a path whose sessions are receiving data")
	}
	s.SetReceived(func(string) time.Time { return time.Now().Add(-time.Hour) })
	_ = s.ProbeNow(context.Background(), "a", KindTLS, slowProber{}, cfg)
	if !s.IsDown("a") {
		t.Fatal("a probe timeout on a path whose sessions receive nothing did not count")
	}
}

// answered is a database's refusal as the engines report it.
type answered struct{}

func (answered) Error() string     { return "FATAL 53300 sorry, too many clients already" }
func (answered) DatabaseAnswered() {}

// refusingProber's login probe is refused by the database.
type refusingProber struct{ err error }

func (p refusingProber) ProbeTLS(context.Context, Path) error   { return nil }
func (p refusingProber) ProbeLogin(context.Context, Path) error { return p.err }

// A login probe the database refuses (it is full) proves the path; one that could not get
// its token says nothing; only the path's own failures count.
func TestProbeClasses(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		wantDown bool
	}{
		{"answered", answered{}, false},
		{"the probe's own credentials refused", refusedLogin{}, true},
		{"secret", &auth.TokenError{Key: auth.Key{User: "app"}, Err: errors.New("STS down")}, false},
		{"path", errors.New("dial: connection refused"), true},
	} {
		s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 1}, nil)
		for range 3 {
			_ = s.ProbeNow(context.Background(), "a", KindLogin, refusingProber{tc.err}, ProbeConfig{})
		}
		if s.IsDown("a") != tc.wantDown {
			t.Errorf("%s: down = %v, want %v (class %s)", tc.name, s.IsDown("a"), tc.wantDown, ClassOf(tc.err))
		}
	}
}

// Every path slow at once, under the real probe loop: each goes down, none passes the probe
// a move waits for, so no sessions are moved.
func TestEveryPathSlowMovesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	paths := []Path{{Name: "a", Address: ln.Addr().String()}, {Name: "b", Address: ln.Addr().String()}, {Name: "c", Address: ln.Addr().String()}}
	s := NewSet("pg", paths, Thresholds{Rise: 2, Fall: 2}, nil)
	moved := make(chan string, 3)
	s.WatchMoves(func(p string) { moved <- p })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx, slowProber{}, ProbeConfig{Interval: 50 * time.Millisecond, TLSInterval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for s.AnyUp() {
		if time.Now().After(deadline) {
			t.Fatal("the paths did not go down")
		}
		select {
		case p := <-moved:
			t.Fatalf("moved the sessions of %s although every path is slow", p)
		case <-time.After(10 * time.Millisecond):
		}
	}
	// A move's verification takes one probe timeout.
	select {
	case p := <-moved:
		t.Fatalf("moved the sessions of %s although every path is slow", p)
	case <-time.After(200 * time.Millisecond):
	}
}

// A path that is up only because its own failures have not reached fall yet is nowhere to
// move sessions to: every path failing at once moves nothing.
func TestWatchMovesNotToAPathThatIsFailingToo(t *testing.T) {
	s := NewSet("pg", threePaths()[:2], Thresholds{Rise: 1, Fall: 2}, nil)
	var moved []string
	s.WatchMoves(func(p string) { moved = append(moved, p) })
	s.ReportFailure("proxy", errors.New("timeout"))
	s.ReportFailure("privatelink", errors.New("timeout"))
	s.ReportFailure("privatelink", errors.New("timeout")) // down; proxy is up with a failure
	if len(moved) != 0 {
		t.Fatalf("moved %v to a path that is failing too", moved)
	}
}
