package topology

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/health"
)

// Session is a kept monitoring session on one instance (a login as the probe user).
type Session interface {
	// Check reads the instance's role and lag, and with a discovery other than static the
	// cluster's topology view.
	Check(ctx context.Context, discovery string) (Report, error)
	Close() error
}

// Checker opens monitoring sessions; the engines (wire/pg, wire/mysql) implement it.
type Checker interface {
	OpenMonitor(ctx context.Context, p health.Path) (Session, error)
}

// Eviction says how the sessions on an instance must leave it.
type Eviction int

const (
	// EvictFailover: the instance no longer has the listener's role (the writer was demoted or
	// replaced; a reader was promoted). Idle sessions end at once, busy ones at the end of their
	// transaction, the rest after kill_grace.
	EvictFailover Eviction = iota
	// EvictLagging: the reader fell behind max_replica_lag. Sessions end at their next idle
	// point, none is cut.
	EvictLagging
	// EvictFallbackOver: a reader listener's sessions on the writer, put there by
	// reader_fallback while no reader was fresh, once one is fresh again. Sessions end at their
	// next idle point, none is cut.
	EvictFallbackOver
)

// Config is one listener's view of a cluster.
type Config struct {
	Listener string
	// Role is the listener's: Writer or Reader.
	Role      Role
	Instances []health.Path
	Checker   Checker
	// Discovery is the config's cluster.discovery; Template makes discovered instances' paths.
	Discovery string
	Template  Template
	// Refresh is the steady pace of checks; FailoverRefresh the fast one kept for
	// FailoverWindow after the writer is lost or changes.
	Refresh, FailoverRefresh, FailoverWindow time.Duration
	// CheckTimeout bounds one check (open and query); 0 means 2 s.
	CheckTimeout time.Duration
	// MaxLag leaves a reader lagging more than this (or unable to say) out; 0 has no rule.
	MaxLag time.Duration
	// FallbackToWriter lets a reader listener use the writer when no fresh reader is left.
	FallbackToWriter bool
	// Balance orders fresh readers: "round-robin", "least-connections" or "fastest".
	Balance string
	// LocalRegion is the sidecar's own Region (aws.region): a reader listener takes fresh
	// readers there first, and readers of other Regions (health.Path.Region) only when none
	// there is fresh ("route to the nearest read replica"). "" = no preference.
	LocalRegion string
	// EndLaggingAtIdle ends the sessions of a reader that falls behind at their next idle point,
	// and a reader listener's fallback sessions on the writer once a reader is fresh again.
	EndLaggingAtIdle bool
	// Sessions counts live sessions per instance (the listener's proxy.Server); nil is none.
	Sessions func() map[string]int
	// Evict moves the sessions off an instance (see Eviction); nil does nothing.
	Evict func(path string, how Eviction)
	// Added hears of a discovered instance (the health set adds it for lookups); nil ignores.
	Added   func(p health.Path)
	Log     *zap.Logger
	Metrics *Metrics
	Now     func() time.Time
}

// failChecks is how many consecutive failed checks make an instance's role unknown: one lost
// query on a busy network must not look like a lost writer; the second comes at the fast pace.
const failChecks = 2

type instance struct {
	path       health.Path
	discovered bool
	checked    bool // at least one check answered
	role       Role
	lag        time.Duration
	lagKnown   bool
	fresh      bool
	failRun    int
	lastErr    string
	checkedAt  time.Time
	rtt        time.Duration
	// viewLag, from a topology view (Aurora), overrides the instance's own lag.
	viewLag      time.Duration
	viewLagKnown bool
	viewLagAt    time.Time
}

// Monitor keeps a cluster's roles and lag fresh and answers which instances serve new
// connections.
type Monitor struct {
	cfg Config
	m   *Metrics

	mu                   sync.Mutex
	inst                 []*instance
	writer               string // the current writer, "" while there is none
	conflict             []string
	lostAt               time.Time // when the last writer was lost, zero when not in a failover
	lost                 string    // the writer lost then
	fastUntil            time.Time
	noWriterSince        time.Time // since when there has been no writer, zero while there is one
	failovers            uint64
	lastFailoverAt       time.Time
	lastFailoverDuration time.Duration
	changed              chan struct{} // closed at the next change of what Candidates returns
	kicked               chan struct{} // closed by Kick: every instance loop checks now
	start                func(*instance)
	rr                   atomic.Uint64
}

// New returns the monitor for cfg; Run keeps it fresh.
func New(cfg Config) *Monitor {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	if cfg.FailoverRefresh <= 0 || cfg.FailoverRefresh > cfg.Refresh {
		cfg.FailoverRefresh = cfg.Refresh
	}
	cfg.Log = cfg.Log.With(zap.String("listener", cfg.Listener))
	mo := &Monitor{cfg: cfg, m: cfg.Metrics, changed: make(chan struct{}), kicked: make(chan struct{}), noWriterSince: cfg.Now()}
	for _, p := range cfg.Instances {
		mo.inst = append(mo.inst, &instance{path: p, role: Unknown})
		mo.m.initInstance(cfg.Listener, p.Name)
	}
	mo.m.initListener(cfg.Listener)
	return mo
}

// Run checks every instance, each on its own loop, until ctx ends.
func (mo *Monitor) Run(ctx context.Context) {
	var wg sync.WaitGroup
	mo.mu.Lock()
	mo.start = func(in *instance) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mo.loop(ctx, in)
		}()
	}
	for _, in := range mo.inst {
		mo.start(in)
	}
	mo.mu.Unlock()
	<-ctx.Done()
	mo.mu.Lock()
	mo.start = nil
	mo.mu.Unlock()
	wg.Wait()
}

// loop checks one instance at the monitor's pace (or at once after Kick, no faster than the
// fast pace), keeping one session open across checks.
func (mo *Monitor) loop(ctx context.Context, in *instance) {
	var sess Session
	defer func() {
		if sess != nil {
			_ = sess.Close()
		}
	}()
	for {
		mo.mu.Lock()
		kicked := mo.kicked
		mo.mu.Unlock()
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, mo.cfg.CheckTimeout)
		var rep Report
		err := error(nil)
		if sess == nil {
			sess, err = mo.cfg.Checker.OpenMonitor(cctx, in.path)
		}
		if err == nil {
			rep, err = sess.Check(cctx, mo.cfg.Discovery)
			if err != nil {
				_ = sess.Close()
				sess = nil
			}
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		mo.Record(in.path.Name, rep, err, time.Since(start))
		gap := time.NewTimer(mo.cfg.FailoverRefresh)
		select {
		case <-ctx.Done():
			gap.Stop()
			return
		case <-gap.C:
		}
		wait := mo.interval() - mo.cfg.FailoverRefresh
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-kicked:
			t.Stop()
		}
	}
}

// interval is the pace now: fast during a failover window, else steady.
func (mo *Monitor) interval() time.Duration {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	if mo.cfg.Now().Before(mo.fastUntil) {
		return mo.cfg.FailoverRefresh
	}
	return mo.cfg.Refresh
}

// Kick makes every instance loop check now (no faster than the fast pace): a login saw a role
// the monitor did not expect, a path went down, a session on the writer died.
func (mo *Monitor) Kick() {
	mo.mu.Lock()
	close(mo.kicked)
	mo.kicked = make(chan struct{})
	mo.mu.Unlock()
}

// Changed is closed at the next change of the candidates (a new writer, a reader back).
func (mo *Monitor) Changed() <-chan struct{} {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	return mo.changed
}

// Record applies one check of the named instance (rtt is how long it took).
func (mo *Monitor) Record(name string, rep Report, err error, rtt time.Duration) {
	var evict []evictOrder
	var added []health.Path
	mo.mu.Lock()
	in := mo.find(name)
	if in == nil {
		mo.mu.Unlock()
		return
	}
	now := mo.cfg.Now()
	before := mo.candidatesKeyLocked()
	wasFresh, wasRole := in.fresh, in.role
	in.checkedAt = now
	if err != nil {
		in.failRun++
		in.lastErr = err.Error()
		mo.m.checks.WithLabelValues(mo.cfg.Listener, name, "failed").Inc()
		if in.role == Writer && name == mo.writer && in.failRun == 1 {
			// The writer may be going: check again at the fast pace before calling it lost.
			mo.fastUntil = now.Add(mo.cfg.FailoverWindow)
		}
		if in.failRun >= failChecks {
			in.role, in.lagKnown = Unknown, false
		}
	} else {
		in.failRun, in.lastErr, in.checked, in.rtt = 0, rep.Warning, true, rtt
		in.role, in.lag, in.lagKnown = rep.Role, rep.Lag, rep.LagKnown
		mo.m.checks.WithLabelValues(mo.cfg.Listener, name, "ok").Inc()
		added = mo.mergeMembersLocked(rep.Members, now)
	}
	if in.viewLagKnown && now.Sub(in.viewLagAt) < 2*mo.cfg.Refresh+mo.cfg.CheckTimeout {
		in.lag, in.lagKnown = in.viewLag, true
	}
	in.fresh = in.role == Reader && (mo.cfg.MaxLag <= 0 || (in.lagKnown && in.lag <= mo.cfg.MaxLag))
	mo.m.setInstance(mo.cfg.Listener, name, in.role, in.lag, in.lagKnown)
	evict = append(evict, mo.chooseWriterLocked(now)...)
	if mo.cfg.Role == Reader {
		switch {
		case wasFresh && !in.fresh && in.role == Reader && mo.cfg.EndLaggingAtIdle:
			mo.cfg.Log.Warn("reader fell behind max_replica_lag: its sessions end at their next idle point",
				zap.String("instance", name), zap.Duration("lag", in.lag), zap.Bool("lag_known", in.lagKnown), zap.Duration("max_replica_lag", mo.cfg.MaxLag))
			evict = append(evict, evictOrder{name, EvictLagging})
		case wasRole == Reader && in.role == Writer && !mo.cfg.FallbackToWriter:
			mo.cfg.Log.Warn("a reader became the writer: its sessions on the reader listener leave it", zap.String("instance", name))
			evict = append(evict, evictOrder{name, EvictFailover})
		case !wasFresh && in.fresh:
			mo.cfg.Log.Info("reader is fresh: it takes new connections", zap.String("instance", name), zap.Duration("lag", in.lag))
			if mo.cfg.FallbackToWriter && mo.cfg.EndLaggingAtIdle && !mo.anyFreshExceptLocked(name) {
				// The fallback is over: sessions it put on the writer go back at their next idle
				// point (any instance answering as writer: the one they were put on).
				// The server logs it when there are any.
				for _, w := range mo.inst {
					if w.role == Writer {
						evict = append(evict, evictOrder{w.path.Name, EvictFallbackOver})
					}
				}
			}
		}
	}
	if mo.candidatesKeyLocked() != before {
		close(mo.changed)
		mo.changed = make(chan struct{})
	}
	mo.updateSessionsLocked()
	mo.mu.Unlock()
	for _, p := range added {
		if mo.cfg.Added != nil {
			mo.cfg.Added(p)
		}
	}
	if mo.cfg.Evict != nil {
		for _, e := range evict {
			mo.cfg.Evict(e.path, e.how)
		}
	}
}

type evictOrder struct {
	path string
	how  Eviction
}

// chooseWriterLocked applies the writer rule (docs/cluster.md, "Two writers"): the current
// writer is kept while it answers as writer, whatever else does; without one, the single
// instance answering as writer becomes it; two or more answering at once, none is chosen.
func (mo *Monitor) chooseWriterLocked(now time.Time) []evictOrder {
	var writers []string
	for _, in := range mo.inst {
		if in.role == Writer {
			writers = append(writers, in.path.Name)
		}
	}
	mo.m.writers.WithLabelValues(mo.cfg.Listener).Set(float64(len(writers)))
	old := mo.writer
	next := ""
	var conflict []string
	switch {
	case old != "" && slices.Contains(writers, old):
		next = old
		if len(writers) > 1 && !slices.Equal(writers, mo.conflict) {
			mo.cfg.Log.Error("more than one instance answers as writer: the current writer is kept, the others get no session",
				zap.String("writer", old), zap.Strings("answering_as_writer", writers))
		}
		if len(writers) > 1 {
			conflict = writers
		}
	case len(writers) == 1:
		next = writers[0]
	case len(writers) > 1:
		conflict = writers
		if !slices.Equal(writers, mo.conflict) {
			mo.cfg.Log.Error("more than one instance answers as writer and none was the writer before: no instance gets writer sessions until one stops",
				zap.Strings("answering_as_writer", writers))
		}
	}
	mo.conflict = conflict
	if next == old {
		return nil
	}
	mo.writer = next
	if next == "" {
		mo.noWriterSince = now
	} else {
		mo.noWriterSince = time.Time{}
	}
	var out []evictOrder
	if old != "" {
		oldIn := mo.find(old)
		if next != "" || roleOf(oldIn) == Reader {
			// Replaced or demoted: its sessions must leave. An instance that merely stopped
			// answering keeps them until another writer answers: they end on their own if it
			// is gone, and stay if it was a blip.
			out = append(out, evictOrder{old, EvictFailover})
		}
		if mo.lostAt.IsZero() {
			mo.lostAt, mo.lost = now, old
			mo.cfg.Log.Warn("the writer is lost: new writer connections wait for the next one", zap.String("writer", old),
				zap.String("role_now", string(roleOf(oldIn))))
		}
	} else if next != "" && mo.lost != "" && mo.lost != next && roleOf(mo.find(mo.lost)) != Reader {
		// The writer went silent, then another answered: the silent one's sessions leave too
		// (a demoted one's left already).
		out = append(out, evictOrder{mo.lost, EvictFailover})
	}
	if mo.cfg.Role != Writer {
		out = nil // a reader listener's sessions follow reader rules (Record)
	}
	mo.fastUntil = now.Add(mo.cfg.FailoverWindow)
	if next != "" {
		if !mo.lostAt.IsZero() {
			d := now.Sub(mo.lostAt)
			mo.failovers++
			mo.lastFailoverAt, mo.lastFailoverDuration = now, d
			mo.m.failovers.WithLabelValues(mo.cfg.Listener).Inc()
			mo.m.failoverSeconds.WithLabelValues(mo.cfg.Listener).Observe(d.Seconds())
			mo.cfg.Log.Warn("failover: a new writer answers", zap.String("writer", next), zap.String("previous", mo.lost),
				zap.Duration("since_writer_lost", d))
		} else {
			mo.cfg.Log.Info("writer found", zap.String("writer", next))
		}
		mo.lostAt, mo.lost = time.Time{}, ""
	}
	for _, in := range mo.inst {
		v := 0.0
		if in.path.Name == next {
			v = 1
		}
		mo.m.current.WithLabelValues(mo.cfg.Listener, in.path.Name).Set(v)
	}
	return out
}

func roleOf(in *instance) Role {
	if in == nil {
		return Unknown
	}
	return in.role
}

// mergeMembersLocked adds the instances a topology view names that the monitor does not know,
// and takes the view's lag for those it does.
func (mo *Monitor) mergeMembersLocked(members []Member, now time.Time) []health.Path {
	var added []health.Path
	for _, m := range members {
		in := mo.findMember(m)
		if in == nil {
			if len(mo.inst) >= maxMembers {
				continue
			}
			var p health.Path
			var err error
			if m.Address != "" {
				p, err = PathFor(m.ID, m.Address)
			} else {
				p, err = mo.cfg.Template.Path(m.ID)
			}
			if err != nil {
				mo.cfg.Log.Warn("a discovered instance has no usable endpoint", zap.String("instance", m.ID), zap.Error(err))
				continue
			}
			in = &instance{path: p, role: Unknown, discovered: true}
			mo.inst = append(mo.inst, in)
			mo.m.initInstance(mo.cfg.Listener, p.Name)
			added = append(added, p)
			mo.cfg.Log.Info("discovered an instance", zap.String("instance", p.Name), zap.String("address", p.Address))
			if mo.start != nil {
				mo.start(in)
			}
		}
		if m.Role == Reader && m.LagKnown {
			in.viewLag, in.viewLagKnown, in.viewLagAt = m.Lag, true, now
		}
	}
	return added
}

// findMember is the instance a view's member is: by name, or by the template's (or the
// view's) address.
func (mo *Monitor) findMember(m Member) *instance {
	addr := m.Address
	if addr == "" {
		if p, err := mo.cfg.Template.Path(m.ID); err == nil {
			addr = p.Address
		}
	}
	host, _, _ := splitHostPort(addr)
	for _, in := range mo.inst {
		// By name, by address, or by the endpoint's name: a configured instance reached
		// through another address (a VPC endpoint, a stand-in) verifies its real endpoint.
		if in.path.Name == m.ID || (addr != "" && in.path.Address == addr) || (host != "" && in.path.TLSServerName == host) {
			return in
		}
	}
	return nil
}

func (mo *Monitor) find(name string) *instance {
	for _, in := range mo.inst {
		if in.path.Name == name {
			return in
		}
	}
	return nil
}

// candidatesKeyLocked is what Candidates depends on, to tell waiters of a change.
func (mo *Monitor) candidatesKeyLocked() string {
	k := mo.writer + "|"
	for _, in := range mo.inst {
		if in.fresh {
			k += in.path.Name + ","
		}
		if !in.checked {
			k += "?" + in.path.Name + ","
		}
	}
	return k
}

func (mo *Monitor) updateSessionsLocked() {
	if mo.cfg.Sessions == nil {
		return
	}
	n := mo.cfg.Sessions()
	for _, in := range mo.inst {
		mo.m.sessions.WithLabelValues(mo.cfg.Listener, in.path.Name).Set(float64(n[in.path.Name]))
	}
}

// Candidates is the instances a new connection should try, in order: for a writer listener
// the writer; for a reader listener the fresh readers by balance, then the writer when the
// fallback allows it. Instances never checked yet come last (the login's role check decides);
// an empty list means none can serve now (wait for Changed).
func (mo *Monitor) Candidates() []health.Path {
	var sessions map[string]int
	if mo.cfg.Role == Reader && mo.cfg.Balance == "least-connections" && mo.cfg.Sessions != nil {
		sessions = mo.cfg.Sessions()
	}
	mo.mu.Lock()
	defer mo.mu.Unlock()
	var out []health.Path
	if mo.cfg.Role == Writer {
		if in := mo.find(mo.writer); in != nil {
			out = append(out, in.path)
		}
	} else {
		var fresh, remote []*instance
		for _, in := range mo.inst {
			switch {
			case !in.fresh:
			case mo.local(in):
				fresh = append(fresh, in)
			default:
				remote = append(remote, in)
			}
		}
		if len(fresh) == 0 {
			// The nearest fresh readers only: another Region's are a round trip across the
			// continent away, taken only when none here is fresh.
			fresh = remote
		}
		out = append(out, mo.balance(fresh, sessions)...)
		if mo.cfg.FallbackToWriter && len(fresh) == 0 {
			if in := mo.find(mo.writer); in != nil {
				out = append(out, in.path)
			}
		}
	}
	if len(out) == 0 {
		for _, in := range mo.inst {
			if !in.checked {
				out = append(out, in.path)
			}
		}
	}
	return out
}

// local reports whether the instance is in the sidecar's Region (or either has none).
func (mo *Monitor) local(in *instance) bool {
	return mo.cfg.LocalRegion == "" || in.path.Region == "" || in.path.Region == mo.cfg.LocalRegion
}

// balance orders fresh readers: round robin rotates the start; least connections sorts by
// live sessions; fastest by the last check's round trip. Ties keep the rotation, so equal
// readers still share the load.
func (mo *Monitor) balance(fresh []*instance, sessions map[string]int) []health.Path {
	n := len(fresh)
	if n == 0 {
		return nil
	}
	off := int(mo.rr.Add(1)-1) % n
	rot := make([]*instance, 0, n)
	rot = append(rot, fresh[off:]...)
	rot = append(rot, fresh[:off]...)
	switch mo.cfg.Balance {
	case "least-connections":
		slices.SortStableFunc(rot, func(a, b *instance) int { return sessions[a.path.Name] - sessions[b.path.Name] })
	case "fastest":
		slices.SortStableFunc(rot, func(a, b *instance) int { return int(a.rtt - b.rtt) })
	}
	out := make([]health.Path, n)
	for i, in := range rot {
		out[i] = in.path
	}
	return out
}

// MismatchError is a login's role check that refused the instance for this listener: the
// database's answer, not a dead path.
type MismatchError struct {
	Instance string
	Want     Role
	Got      Role
	Why      string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("instance %q answered as %s, the listener needs a %s%s", e.Instance, e.Got, e.Want, e.Why)
}

// DatabaseAnswered marks the refusal as the database's answer (health.Answer): the path works.
func (e *MismatchError) DatabaseAnswered() {}

// Accept judges a login's role check on the named instance: nil if the session may serve the
// listener, else a *MismatchError (counted). A role the monitor did not expect makes it check
// every instance now.
func (mo *Monitor) Accept(name string, rep Report) error {
	mo.mu.Lock()
	in := mo.find(name)
	surprise := in == nil || in.role != rep.Role
	var err *MismatchError
	switch mo.cfg.Role {
	case Writer:
		switch {
		case rep.Role != Writer:
			err = &MismatchError{Instance: name, Want: Writer, Got: rep.Role}
		case len(mo.conflict) > 1 && mo.writer == "":
			err = &MismatchError{Instance: name, Want: Writer, Got: rep.Role, Why: fmt.Sprintf(" (but %v all answer as writer: none is used until one stops)", mo.conflict)}
		case mo.writer != "" && mo.writer != name:
			err = &MismatchError{Instance: name, Want: Writer, Got: rep.Role, Why: fmt.Sprintf(" (but %q is the current writer and still answers as one)", mo.writer)}
			surprise = true
		}
	default:
		switch rep.Role {
		case Reader:
		case Writer:
			if !mo.cfg.FallbackToWriter || mo.anyFreshExceptLocked(name) {
				err = &MismatchError{Instance: name, Want: Reader, Got: rep.Role}
			}
		default:
			err = &MismatchError{Instance: name, Want: Reader, Got: rep.Role}
		}
	}
	mo.mu.Unlock()
	if surprise {
		mo.Kick()
	}
	if err != nil {
		mo.m.mismatches.WithLabelValues(mo.cfg.Listener, name).Inc()
		mo.cfg.Log.Info("refused a session on an instance with the wrong role", zap.String("instance", name),
			zap.String("answered", string(rep.Role)), zap.String("needed", string(err.Want)))
		return err
	}
	return nil
}

func (mo *Monitor) anyFreshExceptLocked(name string) bool {
	for _, in := range mo.inst {
		if in.fresh && in.path.Name != name {
			return true
		}
	}
	return false
}

// NoWriterFor is how long the monitor has been without a writer (since it started, or since
// the writer was lost), 0 while it has one.
func (mo *Monitor) NoWriterFor() time.Duration {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	if mo.noWriterSince.IsZero() {
		return 0
	}
	return mo.cfg.Now().Sub(mo.noWriterSince)
}

// Retry is how long a connection waiting for a writer (or a reader) waits before it looks
// again even without a change: the fast pace.
func (mo *Monitor) Retry() time.Duration { return mo.cfg.FailoverRefresh }

// InstanceStatus is one instance in /topology.
type InstanceStatus struct {
	Name        string    `json:"name"`
	Address     string    `json:"address"`
	Region      string    `json:"region,omitempty"`
	Role        Role      `json:"role"`
	Writer      bool      `json:"writer"`
	Fresh       bool      `json:"fresh,omitempty"`
	LagSeconds  *float64  `json:"lag_seconds,omitempty"`
	Sessions    int       `json:"sessions"`
	Discovered  bool      `json:"discovered,omitempty"`
	CheckedAt   time.Time `json:"checked_at,omitzero"`
	CheckMillis float64   `json:"check_ms,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
}

// Status is a listener's cluster in /topology.
type Status struct {
	Listener             string           `json:"listener"`
	Role                 Role             `json:"role"`
	Discovery            string           `json:"discovery"`
	Writer               string           `json:"writer"`
	WritersAnswering     []string         `json:"writers_answering,omitempty"`
	InFailover           bool             `json:"in_failover"`
	Failovers            uint64           `json:"failovers"`
	LastFailoverAt       time.Time        `json:"last_failover_at,omitzero"`
	LastFailoverSeconds  float64          `json:"last_failover_seconds,omitempty"`
	MaxReplicaLagSeconds float64          `json:"max_replica_lag_seconds"`
	Instances            []InstanceStatus `json:"instances"`
}

// Snapshot is the cluster as the monitor sees it now.
func (mo *Monitor) Snapshot() Status {
	var sessions map[string]int
	if mo.cfg.Sessions != nil {
		sessions = mo.cfg.Sessions()
	}
	mo.mu.Lock()
	defer mo.mu.Unlock()
	st := Status{Listener: mo.cfg.Listener, Role: mo.cfg.Role, Discovery: mo.cfg.Discovery, Writer: mo.writer,
		WritersAnswering: mo.conflict, InFailover: !mo.lostAt.IsZero(), Failovers: mo.failovers,
		LastFailoverAt: mo.lastFailoverAt, LastFailoverSeconds: mo.lastFailoverDuration.Seconds(),
		MaxReplicaLagSeconds: mo.cfg.MaxLag.Seconds()}
	for _, in := range mo.inst {
		is := InstanceStatus{Name: in.path.Name, Address: in.path.Address, Region: in.path.Region, Role: in.role, Writer: in.path.Name == mo.writer,
			Fresh: in.fresh, Sessions: sessions[in.path.Name], Discovered: in.discovered, CheckedAt: in.checkedAt,
			CheckMillis: float64(in.rtt.Microseconds()) / 1000, LastError: in.lastErr}
		if in.role == Reader && in.lagKnown {
			s := in.lag.Seconds()
			is.LagSeconds = &s
		}
		st.Instances = append(st.Instances, is)
	}
	return st
}
