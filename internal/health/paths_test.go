package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rdsvalet/rds-valet/internal/auth"
)

func names(ps []Path) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func threePaths() []Path {
	return []Path{{Name: "privatelink"}, {Name: "proxy"}, {Name: "instance"}}
}

func TestRiseFallAndFailback(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	s := NewSet("pg", threePaths(), Thresholds{Rise: 2, Fall: 2}, m)
	var mu sync.Mutex
	var events []string
	s.Watch(func(p string, st State) { mu.Lock(); events = append(events, p+" "+st.String()); mu.Unlock() })
	boom := errors.New("connection refused")

	steps := []struct {
		do   func()
		want []string
	}{
		{func() {}, []string{"privatelink", "proxy", "instance"}},
		{func() { s.ReportFailure("privatelink", boom) }, []string{"privatelink", "proxy", "instance"}}, // one failure: still up
		{func() { s.ReportFailure("privatelink", boom) }, []string{"proxy", "instance", "privatelink"}}, // fall reached
		{func() { s.ReportSuccess("privatelink") }, []string{"proxy", "instance", "privatelink"}},       // one success: not yet
		{func() { s.ReportFailure("privatelink", boom) }, []string{"proxy", "instance", "privatelink"}}, // resets the rise run
		{func() { s.ReportSuccess("privatelink"); s.ReportSuccess("privatelink") }, []string{"privatelink", "proxy", "instance"}},
	}
	for i, st := range steps {
		st.do()
		if got := names(s.Candidates()); !equal(got, st.want) {
			t.Fatalf("step %d: candidates %v, want %v", i, got, st.want)
		}
	}
	if !equal(events, []string{"privatelink down", "privatelink up"}) {
		t.Errorf("watch events %v", events)
	}
	if v := testutil.ToFloat64(m.switches.WithLabelValues("pg", "proxy")); v != 1 {
		t.Errorf("switches to proxy = %v", v)
	}
	if v := testutil.ToFloat64(m.switches.WithLabelValues("pg", "privatelink")); v != 1 {
		t.Errorf("switches back to privatelink = %v", v)
	}
	if v := testutil.ToFloat64(m.up.WithLabelValues("pg", "privatelink")); v != 1 {
		t.Errorf("up gauge = %v", v)
	}
	snap := s.Snapshot()
	if snap[0].LastError != "connection refused" || !snap[0].Preferred || snap[0].Failures != 3 {
		t.Errorf("snapshot %+v", snap[0])
	}
}

func TestAllDownStillOffersEveryPath(t *testing.T) {
	s := NewSet("pg", threePaths(), Thresholds{Rise: 1, Fall: 1}, nil)
	for _, p := range threePaths() {
		s.ReportFailure(p.Name, errors.New("down"))
	}
	if s.AnyUp() {
		t.Fatal("AnyUp with every path down")
	}
	if got := names(s.Candidates()); !equal(got, []string{"privatelink", "proxy", "instance"}) {
		t.Fatalf("candidates %v: a down path is still a last resort, in priority order", got)
	}
}

func TestActiveProbesMarkDownAndUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	addr := ln.Addr().String()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	s := NewSet("pg", []Path{{Name: "a", Address: addr}}, Thresholds{Rise: 2, Fall: 2}, m)
	changes := make(chan State, 4)
	s.Watch(func(_ string, st State) { changes <- st })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Run(ctx, nil, ProbeConfig{Interval: 20 * time.Millisecond, Timeout: 500 * time.Millisecond})
		close(done)
	}()
	defer func() { cancel(); <-done }()

	waitCount := func(kind string, n float64) {
		deadline := time.Now().Add(10 * time.Second)
		for testutil.CollectAndCount(reg, "rdsvalet_health_probe_duration_seconds") == 0 || histCount(t, reg, kind) < n {
			if time.Now().After(deadline) {
				t.Fatalf("fewer than %v %s probes ran", n, kind)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(KindTCP, 3)
	if !s.AnyUp() {
		t.Fatal("path with a live listener marked down")
	}
	ln.Close() // now connections are refused
	select {
	case st := <-changes:
		if st != Down {
			t.Fatalf("got %v, want down", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("path not marked down after its listener closed")
	}
	if v := testutil.ToFloat64(m.probeFailures.WithLabelValues("pg", "a", KindTCP, "refused")); v < 2 {
		t.Errorf("refused probe failures = %v", v)
	}
}

func histCount(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rdsvalet_health_probe_duration_seconds" {
			continue
		}
		for _, mm := range mf.GetMetric() {
			for _, l := range mm.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == kind {
					return float64(mm.GetHistogram().GetSampleCount())
				}
			}
		}
	}
	return 0
}

func TestJitterStaysWithinTenPercent(t *testing.T) {
	for range 1000 {
		d := jitter(time.Second)
		if d < 900*time.Millisecond || d > 1100*time.Millisecond {
			t.Fatalf("jitter %v outside ±10%%", d)
		}
	}
}

func TestReason(t *testing.T) {
	_, err := net.Dial("tcp", "127.0.0.1:1")
	if got := Reason(err); got != "refused" {
		t.Errorf("refused dial: %q (%v)", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if got := Reason(ctx.Err()); got != "timeout" {
		t.Errorf("deadline: %q", got)
	}
	_, err = net.DefaultResolver.LookupHost(context.Background(), "no-such-host.invalid")
	if got := Reason(err); got != "dns" {
		t.Errorf("dns: %q (%v)", got, err)
	}
	// By type, not by words: an error that only says "authentication" or "tls:" is other.
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("login: %w", selfClassified("auth")), "auth"},
		{&auth.TokenError{Key: auth.Key{User: "app"}, Err: errors.New("STS down")}, "auth"},
		{fmt.Errorf("handshake: %w", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), "tls"},
		{fmt.Errorf("verify: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "tls"},
		{errors.New("password authentication failed; tls: x509: Access denied"), "other"},
	} {
		if got := Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

type selfClassified string

func (s selfClassified) Error() string        { return "classified " + string(s) }
func (s selfClassified) HealthReason() string { return string(s) }

// tlsFails is a prober whose TLS probe always fails, as on a path that accepts TCP connections
// but resets or blackholes everything after.
type tlsFails struct{}

func (tlsFails) ProbeTLS(context.Context, Path) error   { return errors.New("tls: connection reset") }
func (tlsFails) ProbeLogin(context.Context, Path) error { return errors.New("login failed") }

func TestTCPSuccessDoesNotHideTLSFailure(t *testing.T) {
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
			c.Close()
		}
	}()
	s := NewSet("pg", []Path{{Name: "a", Address: ln.Addr().String()}}, Thresholds{Rise: 2, Fall: 2}, nil)
	down := make(chan struct{}, 1)
	s.Watch(func(_ string, st State) {
		if st == Down {
			down <- struct{}{}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// TLS probes are rare; TCP probes, which succeed, run every 10 ms in between.
	go func() {
		s.Run(ctx, tlsFails{}, ProbeConfig{Interval: 10 * time.Millisecond, TLSInterval: time.Hour, Timeout: time.Second})
		close(done)
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-down:
	case <-time.After(10 * time.Second):
		t.Fatal("a path failing TLS stayed up because TCP connects succeeded")
	}
	for _, kind := range []string{KindTCP} {
		s.record("a", kind, nil, true)
	}
	if s.AnyUp() {
		t.Fatal("TCP successes brought back a path whose TLS fails")
	}
}
