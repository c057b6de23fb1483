package topology

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rdsvalet/rds-valet/internal/health"
)

type evicted struct {
	path string
	how  Eviction
}

type fixture struct {
	mo      *Monitor
	evicted []evicted
	added   []string
	now     time.Time
	reg     *prometheus.Registry
}

func newFixture(t *testing.T, role Role, names []string, mod func(*Config)) *fixture {
	t.Helper()
	f := &fixture{now: time.Unix(1000, 0), reg: prometheus.NewRegistry()}
	var paths []health.Path
	for _, n := range names {
		paths = append(paths, health.Path{Name: n, Address: n + ":5432"})
	}
	cfg := Config{
		Listener: "l", Role: role, Instances: paths, Refresh: time.Second, FailoverRefresh: 100 * time.Millisecond,
		FailoverWindow: 30 * time.Second, MaxLag: time.Second, FallbackToWriter: true, Balance: "round-robin",
		EndLaggingAtIdle: true, Metrics: NewMetrics(f.reg), Now: func() time.Time { return f.now },
		Evict: func(p string, how Eviction) { f.evicted = append(f.evicted, evicted{p, how}) },
		Added: func(p health.Path) { f.added = append(f.added, p.Name) },
	}
	if mod != nil {
		mod(&cfg)
	}
	f.mo = New(cfg)
	return f
}

func (f *fixture) writer(name string) {
	f.mo.Record(name, Report{Role: Writer, LagKnown: true}, nil, time.Millisecond)
}
func (f *fixture) reader(name string, lag time.Duration) {
	f.mo.Record(name, Report{Role: Reader, Lag: lag, LagKnown: true}, nil, time.Millisecond)
}
func (f *fixture) fail(name string) {
	f.mo.Record(name, Report{}, errors.New("dial: connection refused"), time.Millisecond)
}

func names(ps []health.Path) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return strings.Join(out, " ")
}

// A writer listener's candidates are the writer alone; before any check every instance is
// tried (the login's role check decides); a reader's login is refused as a mismatch, counted.
func TestWriterCandidatesAndAccept(t *testing.T) {
	f := newFixture(t, Writer, []string{"a", "b"}, nil)
	if got := names(f.mo.Candidates()); got != "a b" {
		t.Fatalf("before any check: candidates %q, want every instance", got)
	}
	f.writer("a")
	f.reader("b", 0)
	if got := names(f.mo.Candidates()); got != "a" {
		t.Fatalf("candidates %q, want the writer a", got)
	}
	if err := f.mo.Accept("a", Report{Role: Writer}); err != nil {
		t.Fatalf("the writer refused: %v", err)
	}
	var me *MismatchError
	if err := f.mo.Accept("b", Report{Role: Reader}); !errors.As(err, &me) || me.Got != Reader {
		t.Fatalf("a reader on the writer listener: %v, want a MismatchError", err)
	}
	if n := testutil.ToFloat64(f.mo.m.mismatches.WithLabelValues("l", "b")); n != 1 {
		t.Fatalf("role mismatches counted %v, want 1", n)
	}
}

// The writer lost (two failed checks: one is a blip) leaves no candidate and starts the fast
// pace; the first instance answering as writer takes over, the old writer's sessions are
// evicted, and the failover is counted with its duration.
func TestWriterFailover(t *testing.T) {
	f := newFixture(t, Writer, []string{"a", "b"}, nil)
	f.writer("a")
	f.reader("b", 0)
	changed := f.mo.Changed()
	f.fail("a")
	if got := names(f.mo.Candidates()); got != "a" {
		t.Fatalf("after one failed check: candidates %q, want a still (a blip is not a failover)", got)
	}
	if f.mo.interval() != 100*time.Millisecond {
		t.Fatalf("after the writer's failed check the pace is %s, want the fast 100ms", f.mo.interval())
	}
	f.now = f.now.Add(100 * time.Millisecond)
	f.fail("a")
	if got := names(f.mo.Candidates()); got != "" {
		t.Fatalf("writer lost: candidates %q, want none (wait)", got)
	}
	if len(f.evicted) != 0 {
		t.Fatalf("evicted %v while no new writer answered and a only went silent", f.evicted)
	}
	select {
	case <-changed:
	default:
		t.Fatal("waiters were not told the writer was lost")
	}
	f.now = f.now.Add(1400 * time.Millisecond)
	f.writer("b")
	if got := names(f.mo.Candidates()); got != "b" {
		t.Fatalf("after promotion: candidates %q, want b", got)
	}
	if !slices.Equal(f.evicted, []evicted{{"a", EvictFailover}}) {
		t.Fatalf("evicted %v, want a's sessions (failover)", f.evicted)
	}
	if n := testutil.ToFloat64(f.mo.m.failovers.WithLabelValues("l")); n != 1 {
		t.Fatalf("failovers %v, want 1", n)
	}
	st := f.mo.Snapshot()
	if st.Writer != "b" || st.Failovers != 1 || st.LastFailoverSeconds != 1.4 || st.InFailover {
		t.Fatalf("snapshot %+v: want writer b, 1 failover of 1.4 s, over", st)
	}
	// The old writer back as a reader changes nothing for the writer listener.
	f.reader("a", 0)
	if got := names(f.mo.Candidates()); got != "b" {
		t.Fatalf("candidates %q, want b", got)
	}
}

// A writer that answers read-only (MySQL demoted with read_only) is replaced at once and its
// sessions evicted, even before a new writer answers.
func TestWriterDemoted(t *testing.T) {
	f := newFixture(t, Writer, []string{"a", "b"}, nil)
	f.writer("a")
	f.reader("b", 0)
	f.reader("a", 0)
	if got := names(f.mo.Candidates()); got != "" || !slices.Equal(f.evicted, []evicted{{"a", EvictFailover}}) {
		t.Fatalf("demoted writer: candidates %q evicted %v; want none and a evicted", got, f.evicted)
	}
}

// Two writers: the current one is kept while it answers as one, the other's logins are
// refused; with no current writer and two answering, none is used until one stops.
func TestTwoWriters(t *testing.T) {
	f := newFixture(t, Writer, []string{"a", "b", "c"}, nil)
	f.writer("a")
	f.writer("b")
	f.writer("c")
	if got := names(f.mo.Candidates()); got != "a" {
		t.Fatalf("candidates %q, want the current writer a", got)
	}
	if err := f.mo.Accept("b", Report{Role: Writer}); err == nil || !strings.Contains(err.Error(), `"a" is the current writer`) {
		t.Fatalf("a second writer accepted: %v", err)
	}
	f.fail("a")
	f.fail("a")
	if got := names(f.mo.Candidates()); got != "" {
		t.Fatalf("a lost, b and c both writers: candidates %q, want none", got)
	}
	if err := f.mo.Accept("b", Report{Role: Writer}); err == nil || !strings.Contains(err.Error(), "all answer as writer") {
		t.Fatalf("with two writers and no current one, b accepted: %v", err)
	}
	if n := testutil.ToFloat64(f.mo.m.writers.WithLabelValues("l")); n != 2 {
		t.Fatalf("writers answering %v, want 2", n)
	}
	f.reader("c", 0)
	if got := names(f.mo.Candidates()); got != "b" {
		t.Fatalf("c stepped down: candidates %q, want b", got)
	}
}

// A reader listener: fresh readers in rotation, a lagging one left out (its sessions told to
// end at idle) and taken back when it catches up, the writer only when no reader is fresh.
func TestReaderLagAndFallback(t *testing.T) {
	f := newFixture(t, Reader, []string{"r1", "r2", "w"}, nil)
	f.writer("w")
	f.reader("r1", 0)
	f.reader("r2", 200*time.Millisecond)
	// The first fresh reader ends whatever the fallback (or the login check before any check)
	// put on the writer.
	if !slices.Equal(f.evicted, []evicted{{"w", EvictFallbackOver}}) {
		t.Fatalf("first reader fresh: evicted %v, want the writer's sessions told to end at idle", f.evicted)
	}
	f.evicted = nil
	first := map[string]int{}
	for range 10 {
		c := f.mo.Candidates()
		if len(c) != 2 {
			t.Fatalf("candidates %q, want both readers and not the writer", names(c))
		}
		first[c[0].Name]++
	}
	if first["r1"] != 5 || first["r2"] != 5 {
		t.Fatalf("round robin put first %v, want 5 each", first)
	}
	f.reader("r2", 3*time.Second)
	if got := names(f.mo.Candidates()); got != "r1" || !slices.Equal(f.evicted, []evicted{{"r2", EvictLagging}}) {
		t.Fatalf("r2 3 s behind: candidates %q evicted %v; want r1 only and r2's sessions told to end at idle", got, f.evicted)
	}
	if err := f.mo.Accept("w", Report{Role: Writer}); err == nil {
		t.Fatal("the writer was accepted on the reader listener while r1 is fresh")
	}
	// Unknown lag (replication stopped) is lagging too.
	f.mo.Record("r1", Report{Role: Reader}, nil, time.Millisecond)
	if got := names(f.mo.Candidates()); got != "w" {
		t.Fatalf("no fresh reader: candidates %q, want the writer (fallback)", got)
	}
	if err := f.mo.Accept("w", Report{Role: Writer}); err != nil {
		t.Fatalf("fallback to the writer refused: %v", err)
	}
	f.evicted = nil
	f.reader("r2", 0)
	if got := names(f.mo.Candidates()); got != "r2" {
		t.Fatalf("r2 caught up: candidates %q, want r2", got)
	}
	if !slices.Equal(f.evicted, []evicted{{"w", EvictFallbackOver}}) {
		t.Fatalf("r2 caught up after the fallback: evicted %v, want the writer's sessions told to end at idle", f.evicted)
	}
	if g := testutil.ToFloat64(f.mo.m.lag.WithLabelValues("l", "r1")); g != -1 {
		t.Fatalf("unknown lag gauge %v, want -1", g)
	}
	if g := testutil.ToFloat64(f.mo.m.lag.WithLabelValues("l", "r2")); g != 0 {
		t.Fatalf("r2 lag gauge %v, want 0", g)
	}
	// Another reader back while r2 is fresh: no fallback was in effect, nothing to move.
	f.evicted = nil
	f.reader("r1", 0)
	if len(f.evicted) != 0 {
		t.Fatalf("a second reader fresh: evicted %v, want nothing", f.evicted)
	}
}

func TestReaderFallbackNone(t *testing.T) {
	f := newFixture(t, Reader, []string{"r1", "w"}, func(c *Config) { c.FallbackToWriter = false })
	f.writer("w")
	f.reader("r1", 5*time.Second)
	if got := names(f.mo.Candidates()); got != "" {
		t.Fatalf("fallback none, no fresh reader: candidates %q, want none", got)
	}
	// A reader promoted: its sessions on the reader listener must leave.
	f.reader("r1", 0)
	f.writer("r1")
	if !slices.Contains(f.evicted, evicted{"r1", EvictFailover}) {
		t.Fatalf("evicted %v, want r1's sessions (it became a writer)", f.evicted)
	}
}

func TestLeastConnectionsAndFastest(t *testing.T) {
	sessions := map[string]int{"r1": 5, "r2": 1, "r3": 3}
	f := newFixture(t, Reader, []string{"r1", "r2", "r3"}, func(c *Config) {
		c.Balance = "least-connections"
		c.Sessions = func() map[string]int { return sessions }
	})
	for _, r := range []string{"r1", "r2", "r3"} {
		f.reader(r, 0)
	}
	for range 3 {
		if got := names(f.mo.Candidates()); got != "r2 r3 r1" {
			t.Fatalf("least connections: %q, want r2 r3 r1", got)
		}
	}
	g := newFixture(t, Reader, []string{"r1", "r2"}, func(c *Config) { c.Balance = "fastest" })
	g.mo.Record("r1", Report{Role: Reader, LagKnown: true}, nil, 9*time.Millisecond)
	g.mo.Record("r2", Report{Role: Reader, LagKnown: true}, nil, 2*time.Millisecond)
	for range 3 {
		if got := names(g.mo.Candidates()); got != "r2 r1" {
			t.Fatalf("fastest: %q, want r2 r1", got)
		}
	}
}

// A topology view's members become instances (endpoint from the template), reported to Added;
// its lag overrides the instance's own.
func TestDiscoveredMembers(t *testing.T) {
	f := newFixture(t, Reader, []string{"db-w"}, func(c *Config) {
		c.Discovery = "aurora-postgresql"
		c.Template = "?.cluster-xyz.us-east-1.rds.amazonaws.com:5432"
	})
	f.mo.Record("db-w", Report{Role: Writer, LagKnown: true, Members: []Member{
		{ID: "db-w", Role: Writer, LagKnown: true},
		{ID: "db-r1", Role: Reader, Lag: 3 * time.Second, LagKnown: true},
	}}, nil, time.Millisecond)
	if !slices.Equal(f.added, []string{"db-r1"}) {
		t.Fatalf("added %v, want db-r1", f.added)
	}
	f.reader("db-r1", 0)
	if got := names(f.mo.Candidates()); got != "db-w" {
		t.Fatalf("db-r1 3 s behind by the view: candidates %q, want the writer (fallback)", got)
	}
	st := f.mo.Snapshot()
	if len(st.Instances) != 2 || st.Instances[1].Address != "db-r1.cluster-xyz.us-east-1.rds.amazonaws.com:5432" || !st.Instances[1].Discovered {
		t.Fatalf("snapshot %+v", st.Instances)
	}
}

// A view member that is a configured instance under another name and address (a VPC endpoint
// or a stand-in in front of it) is that instance, known by its endpoint's TLS name.
func TestMemberMatchesAConfiguredEndpoint(t *testing.T) {
	f := newFixture(t, Writer, nil, func(c *Config) {
		c.Discovery = "multi-az-mysql"
		c.Instances = []health.Path{{Name: "w", Address: "127.0.0.1:1234", TLSServerName: "db-1.abc.us-east-1.rds.amazonaws.com"}}
	})
	f.mo.Record("w", Report{Role: Writer, LagKnown: true, Members: []Member{
		{ID: "1", Address: "db-1.abc.us-east-1.rds.amazonaws.com:3306"},
		{ID: "2", Address: "db-2.abc.us-east-1.rds.amazonaws.com:3306"},
	}}, nil, time.Millisecond)
	if !slices.Equal(f.added, []string{"2"}) {
		t.Fatalf("added %v, want only the unknown member 2", f.added)
	}
}

// Route to the nearest read replica: a reader listener takes fresh readers of its own Region
// (or of none given) and another Region's only when none here is fresh, before the writer.
func TestReaderPrefersItsRegion(t *testing.T) {
	regions := map[string]string{"east1": "us-east-1", "east2": "", "west": "us-west-2", "w": "us-east-1"}
	f := newFixture(t, Reader, []string{"east1", "west", "east2", "w"}, func(c *Config) {
		c.LocalRegion = "us-east-1"
		for i := range c.Instances {
			c.Instances[i].Region = regions[c.Instances[i].Name]
		}
	})
	f.writer("w")
	for _, r := range []string{"east1", "west", "east2"} {
		f.reader(r, 0)
	}
	first := map[string]int{}
	for range 10 {
		c := f.mo.Candidates()
		if got := names(c); got != "east1 east2" && got != "east2 east1" {
			t.Fatalf("every reader fresh: candidates %q, want the two in us-east-1 only", got)
		}
		first[c[0].Name]++
	}
	if first["east1"] != 5 || first["east2"] != 5 {
		t.Fatalf("round robin over the local readers put first %v, want 5 each", first)
	}
	f.reader("east1", 3*time.Second)
	f.reader("east2", 3*time.Second)
	if got := names(f.mo.Candidates()); got != "west" {
		t.Fatalf("no fresh local reader: candidates %q, want the us-west-2 one (before the writer)", got)
	}
	if err := f.mo.Accept("w", Report{Role: Writer}); err == nil {
		t.Fatal("the writer was accepted while a reader in another Region is fresh")
	}
	f.reader("west", 3*time.Second)
	if got := names(f.mo.Candidates()); got != "w" {
		t.Fatalf("no fresh reader anywhere: candidates %q, want the writer (fallback)", got)
	}
	f.reader("west", 0)
	f.reader("east2", 0)
	if got := names(f.mo.Candidates()); got != "east2" {
		t.Fatalf("east2 caught up: candidates %q, want east2 alone", got)
	}
	for _, is := range f.mo.Snapshot().Instances {
		if is.Region != regions[is.Name] {
			t.Errorf("/topology: %s region %q, want %q", is.Name, is.Region, regions[is.Name])
		}
	}

	// Without a local Region (a password listener) there is no preference.
	g := newFixture(t, Reader, []string{"east1", "west"}, func(c *Config) {
		c.Instances[1].Region = "us-west-2"
	})
	g.reader("east1", 0)
	g.reader("west", 0)
	if got := len(g.mo.Candidates()); got != 2 {
		t.Fatalf("no local Region: %d candidates, want both readers", got)
	}
}

// With lag_action keep, fallback sessions stay on the writer too.
func TestFallbackKeptWithLagActionKeep(t *testing.T) {
	f := newFixture(t, Reader, []string{"r1", "w"}, func(c *Config) { c.EndLaggingAtIdle = false })
	f.writer("w")
	f.reader("r1", 5*time.Second)
	f.reader("r1", 0)
	if len(f.evicted) != 0 {
		t.Fatalf("lag_action keep: evicted %v, want nothing", f.evicted)
	}
}

// How long the monitor has had no writer: since it started, then 0 while it has one, then
// since the writer was lost.
func TestNoWriterFor(t *testing.T) {
	f := newFixture(t, Writer, []string{"a", "b"}, nil)
	f.now = f.now.Add(3 * time.Second)
	if d := f.mo.NoWriterFor(); d != 3*time.Second {
		t.Fatalf("no check yet: %v, want 3s since the start", d)
	}
	f.writer("a")
	f.reader("b", 0)
	if d := f.mo.NoWriterFor(); d != 0 {
		t.Fatalf("with a writer: %v", d)
	}
	f.fail("a")
	f.fail("a") // two failed checks: the writer is lost
	f.now = f.now.Add(5 * time.Second)
	if d := f.mo.NoWriterFor(); d != 5*time.Second {
		t.Fatalf("writer lost 5 s ago: %v", d)
	}
	f.writer("b")
	if d := f.mo.NoWriterFor(); d != 0 {
		t.Fatalf("new writer: %v", d)
	}
}
