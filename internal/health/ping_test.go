package health

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeEngine is an engine whose probe sessions behave as the test says: they answer, stay
// silent (a blackhole: the open and every ping wait for their deadline), or end once (the
// server closed an idle session).
type fakeEngine struct {
	mu       sync.Mutex
	mode     string // "ok", "silent", "end-once", "late"
	openErr  error
	opens    int
	pings    int
	live     int
	tlsCalls int
}

func (f *fakeEngine) set(mode string, openErr error) {
	f.mu.Lock()
	f.mode, f.openErr = mode, openErr
	f.mu.Unlock()
}

func (f *fakeEngine) counts() (opens, pings, live, tls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens, f.pings, f.live, f.tlsCalls
}

func (f *fakeEngine) ProbeTLS(context.Context, Path) error {
	f.mu.Lock()
	f.tlsCalls++
	f.mu.Unlock()
	return nil
}

func (f *fakeEngine) ProbeLogin(context.Context, Path) error { return nil }

func (f *fakeEngine) OpenProbeSession(ctx context.Context, _ Path) (ProbeSession, error) {
	f.mu.Lock()
	f.opens++
	mode, err := f.mode, f.openErr
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if mode == "silent" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	f.mu.Lock()
	f.live++
	f.mu.Unlock()
	return &fakeSession{f: f}, nil
}

type fakeSession struct {
	f       *fakeEngine
	waiting int // timeouts spent on the outstanding ping (mode "late")
}

func (s *fakeSession) Ping(ctx context.Context) error {
	f := s.f
	f.mu.Lock()
	f.pings++
	mode := f.mode
	if mode == "end-once" {
		f.mode = "ok"
	}
	f.mu.Unlock()
	switch mode {
	case "silent":
		<-ctx.Done()
		return ctx.Err()
	case "end-once":
		return io.EOF
	case "late": // answers during the second wait on the same ping
		if s.waiting == 0 {
			s.waiting++
			<-ctx.Done()
			return ctx.Err()
		}
		s.waiting = 0
	}
	return nil
}

func (s *fakeSession) Close() error {
	s.f.mu.Lock()
	s.f.live--
	s.f.mu.Unlock()
	return nil
}

// okDialer makes the TCP probe succeed without a network.
type okDialer struct{}

func (okDialer) DialContext(context.Context, string, string) (net.Conn, error) {
	a, b := net.Pipe()
	_ = b.Close()
	return a, nil
}

const (
	testPing = 20 * time.Millisecond
)

func runPing(t *testing.T, s *Set, f *fakeEngine, cfg ProbeConfig) {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = testPing
	}
	cfg.PingInterval, cfg.PingTimeout, cfg.Timeout, cfg.Dialer = testPing, testPing, testPing, okDialer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx, f, cfg)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		if _, _, live, _ := f.counts(); live != 0 {
			t.Errorf("%d probe sessions left open after Run returned", live)
		}
	})
}

func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func downWatch(s *Set) (down <-chan time.Time) {
	ch := make(chan time.Time, 8)
	s.Watch(func(_ string, st State) {
		if st == Down {
			ch <- time.Now()
		}
	})
	return ch
}

// A path gone silent is marked down after fall ping timeouts of the same silence, without
// waiting for a ping interval in between, and comes back once sessions answer again.
func TestPingSilenceMarksDownAndBack(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 2, Fall: 3}, m)
	down := downWatch(s)
	f := &fakeEngine{mode: "ok"}
	runPing(t, s, f, ProbeConfig{TLSInterval: time.Hour})
	poll(t, "pings answered", func() bool { _, p, _, _ := f.counts(); return p >= 3 })
	if v := testutil.ToFloat64(m.probeSessions.WithLabelValues("pg", "a")); v != 1 {
		t.Errorf("probe sessions gauge = %v, want 1", v)
	}
	opens, _, _, _ := f.counts()
	if opens != 1 {
		t.Errorf("%d sessions opened for an answering path, want 1 kept", opens)
	}
	f.mu.Lock()
	f.mode = "silent"
	pingsBefore := f.pings
	f.mu.Unlock()
	cut := time.Now()
	var at time.Time
	select {
	case at = <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("a silent path stayed up")
	}
	_, pings, _, _ := f.counts()
	// One ping outstanding, waited on fall times: no new ping is sent into the silence.
	if pings-pingsBefore != 3 {
		t.Errorf("%d ping calls into the silence, want fall (3) waits on one ping", pings-pingsBefore)
	}
	if d := at.Sub(cut); d < 3*testPing {
		t.Errorf("down after %v, before fall ping timeouts", d)
	}
	if v := testutil.ToFloat64(m.probeFailures.WithLabelValues("pg", "a", KindPing, "timeout")); v != 3 {
		t.Errorf("ping timeouts counted = %v, want 3", v)
	}
	// The silent session is dropped; reopens (silent too) keep failing.
	poll(t, "silent session closed", func() bool { _, _, live, _ := f.counts(); return live == 0 })
	poll(t, "reopen attempts fail", func() bool {
		return testutil.ToFloat64(m.probeFailures.WithLabelValues("pg", "a", KindLogin, "timeout")) >= 2
	})
	f.set("ok", nil)
	poll(t, "path back up", s.AnyUp)
}

// A kept session the server closes (idle timeout, terminated backend) is no evidence against
// the path: with fall 1, one counted failure would mark it down.
func TestPingEndedSessionIsReopenedNotCounted(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 1}, m)
	down := downWatch(s)
	f := &fakeEngine{mode: "ok"}
	runPing(t, s, f, ProbeConfig{TLSInterval: time.Hour})
	poll(t, "first session", func() bool { _, p, _, _ := f.counts(); return p >= 1 })
	for range 3 {
		opens, _, _, _ := f.counts()
		f.set("end-once", nil)
		poll(t, "reopened", func() bool { o, _, _, _ := f.counts(); return o == opens+1 })
	}
	_, pings, _, _ := f.counts()
	poll(t, "pings on the reopened session", func() bool { _, p, _, _ := f.counts(); return p >= pings+2 })
	select {
	case <-down:
		t.Fatal("a session closed by the server marked the path down")
	default:
	}
	if st := s.Snapshot()[0]; st.Failures != 0 {
		t.Errorf("failures = %d (%s), want 0", st.Failures, st.LastError)
	}
}

// A late answer (past one timeout, within fall) is a slow path, not a dead one.
func TestPingLateAnswerKeepsPathUp(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 2}, m)
	down := downWatch(s)
	f := &fakeEngine{mode: "late"}
	runPing(t, s, f, ProbeConfig{TLSInterval: time.Hour})
	poll(t, "late answers", func() bool {
		return testutil.ToFloat64(m.probeFailures.WithLabelValues("pg", "a", KindPing, "timeout")) >= 4
	})
	select {
	case <-down:
		t.Fatal("answers one timeout late marked the path down")
	default:
	}
	if opens, _, _, _ := f.counts(); opens != 1 {
		t.Errorf("%d sessions opened, want the one kept", opens)
	}
}

// A server that refuses the probe session (a wrong probe user, a full database) proves the
// path works: not counted, not retried every ping; the TCP/TLS schedule probes meanwhile.
func TestPingRefusedOpenBacksOff(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 1}, m)
	down := downWatch(s)
	f := &fakeEngine{mode: "ok", openErr: answered{}}
	runPing(t, s, f, ProbeConfig{TLSInterval: 2 * testPing})
	poll(t, "TCP and TLS probes instead, the refusal counted once", func() bool {
		_, _, _, tls := f.counts()
		return tls >= 2 && histCount(t, reg, KindTCP) >= 2 &&
			testutil.ToFloat64(m.probeFailures.WithLabelValues("pg", "a", KindLogin, "other")) == 1
	})
	if opens, _, _, _ := f.counts(); opens != 1 {
		t.Errorf("%d opens, want 1 until refusedOpenRetry", opens)
	}
	select {
	case <-down:
		t.Fatal("a refused probe login marked the path down")
	default:
	}
}

// A ping answered vouches as deep as TLS: it ends the escalation a failure started.
func TestPingClearsEscalation(t *testing.T) {
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 5}, nil)
	f := &fakeEngine{mode: "ok"}
	runPing(t, s, f, ProbeConfig{TLSInterval: time.Hour}) // the one TLS probe runs at the first tick
	poll(t, "session kept and pinged", func() bool { _, p, _, _ := f.counts(); return p >= 2 })
	login := s.Snapshot()[0].LastLoginAt
	if login.IsZero() {
		t.Error("opening the probe session did not count as a login")
	}
	s.ReportFailure("a", errors.New("dial: connection refused"))
	if !s.isEscalated("a") {
		t.Fatal("a failure did not escalate")
	}
	poll(t, "escalation cleared by a ping", func() bool { return !s.isEscalated("a") })
	if got := s.Snapshot()[0].LastLoginAt; !got.Equal(login) {
		t.Errorf("a ping moved the last login from %v to %v; only logins may", login, got)
	}
}

// refusedLogin is the database refusing the probe user: an answer, classified auth.
type refusedLogin struct{}

func (refusedLogin) Error() string        { return "FATAL 28000 role \"probe\" does not exist" }
func (refusedLogin) HealthReason() string { return "auth" }
func (refusedLogin) DatabaseAnswered()    {}

// A ping unanswered while the path's sessions receive data is a slow database, not a dead
// path: nothing is counted however long the same ping waits.
func TestPingSilenceWhileSessionsReceiveIsNotCounted(t *testing.T) {
	s := NewSet("pg", []Path{{Name: "a"}}, Thresholds{Rise: 1, Fall: 1}, nil)
	s.SetReceived(func(string) time.Time { return time.Now() })
	down := downWatch(s)
	f := &fakeEngine{mode: "ok"}
	runPing(t, s, f, ProbeConfig{TLSInterval: time.Hour})
	poll(t, "a kept session", func() bool { _, p, _, _ := f.counts(); return p >= 1 })
	f.set("silent", nil)
	poll(t, "five pings unanswered", func() bool { _, p, _, _ := f.counts(); return p >= 6 })
	select {
	case <-down:
		t.Fatal("unanswered pings marked down a path whose sessions are receiving data")
	default:
	}
	s.SetReceived(func(string) time.Time { return time.Time{} })
	select {
	case <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("unanswered pings with no data flowing did not mark the path down")
	}
}
