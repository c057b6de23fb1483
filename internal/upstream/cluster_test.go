package upstream

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
	"github.com/rdsvalet/rds-valet/internal/topology"
)

// fakeCluster is a cluster view whose candidates a test changes.
type fakeCluster struct {
	mu      sync.Mutex
	cands   []health.Path
	changed chan struct{}
	roles   map[string]topology.Role // what each instance's login check says
}

func (c *fakeCluster) Candidates() []health.Path {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cands
}

func (c *fakeCluster) Changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changed
}

func (c *fakeCluster) set(cands ...health.Path) {
	c.mu.Lock()
	c.cands = cands
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

func (c *fakeCluster) Accept(name string, r topology.Report) error {
	if r.Role != topology.Writer {
		return &topology.MismatchError{Instance: name, Want: topology.Writer, Got: r.Role}
	}
	return nil
}

func (c *fakeCluster) Retry() time.Duration { return time.Hour }

func (c *fakeCluster) Kick() {}

// roleLogin is an engine whose sessions are pipes and whose role check reads the cluster's
// roles as they are at the check.
type roleLogin struct {
	c      *fakeCluster
	mu     sync.Mutex
	closed []string
	logins []string
}

func (l *roleLogin) Login(_ context.Context, p health.Path, _ *proxy.Startup, _ func(context.Context) (string, error)) (*proxy.Session, error) {
	a, b := net.Pipe()
	go func() {
		_, _ = b.Read(make([]byte, 1))
		l.mu.Lock()
		l.closed = append(l.closed, p.Name)
		l.mu.Unlock()
	}()
	l.mu.Lock()
	l.logins = append(l.logins, p.Name)
	l.mu.Unlock()
	return &proxy.Session{Path: p.Name, Conn: a}, nil
}

func (l *roleLogin) CheckRole(_ context.Context, s *proxy.Session) (topology.Report, error) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	return topology.Report{Role: l.c.roles[s.Path]}, nil
}

// A session on an instance whose login check says it is not the writer is closed, never
// handed out, and not blamed on the path; with no writer the open waits for the cluster to
// change, and takes the new writer as soon as it is a candidate.
func TestClusterOpenWaitsForTheWriter(t *testing.T) {
	a, b := health.Path{Name: "a"}, health.Path{Name: "b"}
	set := health.NewSet("pg", []health.Path{a, b}, health.Thresholds{Rise: 1, Fall: 1}, nil)
	c := &fakeCluster{cands: []health.Path{a}, changed: make(chan struct{}), roles: map[string]topology.Role{"a": topology.Reader, "b": topology.Reader}}
	l := &roleLogin{c: c}
	src := New(Config{Listener: "pg", Paths: set, Engine: l, ConnectTimeout: 5 * time.Second, Cluster: c,
		Secret: func(context.Context, health.Path, string) (string, error) { return "x", nil }})
	type result struct {
		s   *proxy.Session
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := src.Open(context.Background(), &proxy.Startup{User: "app"})
		done <- result{s, err}
	}()
	// a answers as a reader: refused; Open waits for a change.
	deadline := time.Now().Add(2 * time.Second)
	for {
		l.mu.Lock()
		n := len(l.closed)
		l.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the mismatched session on a was not closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case r := <-done:
		t.Fatalf("Open returned %+v before any writer: want it to wait", r)
	default:
	}
	c.mu.Lock()
	c.roles["b"] = topology.Writer
	c.mu.Unlock()
	c.set(b)
	r := <-done
	if r.err != nil || r.s.Path != "b" {
		t.Fatalf("Open = %+v, %v; want a session on the new writer b", r.s, r.err)
	}
	if !allUp(set) {
		t.Fatalf("paths %v: a role mismatch is the database's answer, not a dead path", set.Snapshot())
	}
}

// With no writer within the connect timeout, the app is told why, naming the cluster.
func TestClusterOpenTimesOut(t *testing.T) {
	set := health.NewSet("pg", []health.Path{{Name: "a"}}, health.Thresholds{Rise: 1, Fall: 1}, nil)
	c := &fakeCluster{changed: make(chan struct{})}
	src := New(Config{Listener: "pg", Paths: set, Engine: &roleLogin{c: c}, ConnectTimeout: 200 * time.Millisecond, Cluster: c,
		Secret: func(context.Context, health.Path, string) (string, error) { return "x", nil }})
	start := time.Now()
	_, err := src.Open(context.Background(), &proxy.Startup{User: "app"})
	var ne *proxy.NoPathError
	if !errors.As(err, &ne) || !strings.Contains(err.Error(), "no instance with the listener's role") {
		t.Fatalf("Open = %v; want a NoPathError saying no instance had the role", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Fatalf("Open took %s; want about the connect timeout", d)
	}
}
