// Package health knows which upstream paths of a listener are usable. It probes each path
// (TCP connect, TLS handshake, and a full login at a slower pace), takes reports from real
// connections (passive health), applies rise/fall thresholds, answers which paths new
// connections should try, best first, and tells watchers when a path goes down or comes back.
package health

import (
	"sync"
	"time"

	"go.uber.org/zap"
)

// Path is one network route to the database. Address is dialed; the TLS certificate must name
// TLSServerName; the IAM token is signed for TokenHost (host:port). Behind a PrivateLink
// endpoint or an NLB the last two are the RDS endpoint's real name, not the dialed one.
type Path struct {
	Name          string
	Address       string
	TLSServerName string
	TokenHost     string
	// Region is the AWS Region the IAM token is signed for (the sidecar fills in aws.region
	// when the config gives none); "" = the listener's default.
	Region string
}

// State is a path's health as the selector sees it.
type State int

const (
	Up State = iota
	Down
)

func (s State) String() string {
	if s == Up {
		return "up"
	}
	return "down"
}

// Thresholds say how many consecutive results flip a path's state.
type Thresholds struct {
	Rise int // successes to come back up
	Fall int // failures to go down
}

// Set is one listener's paths in priority order with their health.
type Set struct {
	listener string
	th       Thresholds
	now      func() time.Time
	metrics  *Metrics

	mu       sync.Mutex
	paths    []*pathState
	best     string // the path new connections go to first, for the switch metric
	watchers []func(path string, s State)
	movers   []func(path string)
	// received, if set, is when a live session on the path last received data from upstream.
	received func(path string) time.Time
	// verify, set while Run probes, probes a path at once as deep as the probes go; a move
	// waits for another path to pass it.
	verify func(p Path) error
	log    *zap.Logger // the probes' logger while Run probes
}

type pathState struct {
	Path
	state     State
	succRun   int
	failRun   int
	lastErr   string
	lastErrAt time.Time
	lastOK    time.Time // last successful login, real or probe
	lastProbe time.Time
	changedAt time.Time
	// escalated: a failure was seen (probe or real connection), so probes go at least as far
	// as TLS until one that deep succeeds; a bare TCP connect must not vouch for a path whose
	// TLS or login fails (a reset or blackholed path accepts TCP connections).
	escalated bool
	failures  uint64
	successes uint64
}

// NewSet returns the paths of one listener, all assumed up until told otherwise.
func NewSet(listener string, paths []Path, th Thresholds, m *Metrics) *Set {
	if th.Rise < 1 {
		th.Rise = 1
	}
	if th.Fall < 1 {
		th.Fall = 1
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	s := &Set{listener: listener, th: th, now: time.Now, metrics: m, log: zap.NewNop()}
	for _, p := range paths {
		s.paths = append(s.paths, &pathState{Path: p, state: Up, succRun: th.Rise})
		m.initPath(listener, p.Name)
	}
	if len(paths) > 0 {
		s.best = paths[0].Name
	}
	return s
}

// Add appends a path found after the set was made (a cluster instance discovered from a
// topology view), up; it is not probed by Run (the topology monitor checks it), but real
// logins report on it and Lookup finds it. A name already present is left alone.
func (s *Set) Add(p Path) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.find(p.Name) != nil {
		return
	}
	s.paths = append(s.paths, &pathState{Path: p, state: Up, succRun: s.th.Rise})
	s.metrics.initPath(s.listener, p.Name)
}

// Watch registers fn to be told of every state change; fn runs on the reporting goroutine
// and must not block.
func (s *Set) Watch(fn func(path string, st State)) {
	s.mu.Lock()
	s.watchers = append(s.watchers, fn)
	s.mu.Unlock()
}

// WatchMoves registers fn to be told when the sessions on a path that went down should move
// off it: when it goes down, another path is up with no failure in its current run, and passes
// a probe made then (while Run probes; without it, being up and clean is enough). A path that passes proves there is somewhere better
// to go; one that fails too (every path slow at once) keeps the sessions where they are, each
// ended only by its own evidence of death (docs/failover.md). fn runs on a goroutine of the set
// and must not block.
func (s *Set) WatchMoves(fn func(path string)) {
	s.mu.Lock()
	s.movers = append(s.movers, fn)
	s.mu.Unlock()
}

// SetReceived tells the set when live sessions on a path last received data from upstream: a
// probe that timed out while they were receiving data is a slow probe, not a dead path.
func (s *Set) SetReceived(fn func(path string) time.Time) {
	s.mu.Lock()
	s.received = fn
	s.mu.Unlock()
}

// IsDown reports whether the named path is marked down.
func (s *Set) IsDown(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(name)
	return p != nil && p.state == Down
}

// Candidates returns the paths new connections should try, in order: healthy paths by
// priority, then the unhealthy ones as a last resort (a path marked down may have recovered).
func (s *Set) Candidates() []Path {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Path, 0, len(s.paths))
	for _, p := range s.paths {
		if p.state == Up {
			out = append(out, p.Path)
		}
	}
	for _, p := range s.paths {
		if p.state != Up {
			out = append(out, p.Path)
		}
	}
	return out
}

// Lookup returns the path named name.
func (s *Set) Lookup(name string) (Path, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.find(name); p != nil {
		return p.Path, true
	}
	return Path{}, false
}

// ReportSuccess records a successful login on the path (a real one or a probe's).
func (s *Set) ReportSuccess(name string) {
	s.record(name, "", nil, true)
}

// ReportFailure records a failed attempt to reach the upstream over the path. A failed real
// dial counts at once, like a failed probe, without waiting for the next probe.
func (s *Set) ReportFailure(name string, err error) {
	s.record(name, "", err, false)
}

// record applies one result to the path's state machine and notifies watchers of a change.
// kind is the probe kind, or "" for a real connection.
func (s *Set) record(name, kind string, err error, ok bool) {
	s.mu.Lock()
	p := s.find(name)
	if p == nil {
		s.mu.Unlock()
		return
	}
	now := s.now()
	changed := false
	if ok && p.escalated && (kind == KindTCP) {
		// A shallow success says nothing about the failure being chased: it is not counted.
		s.mu.Unlock()
		return
	}
	if ok {
		if kind == KindTLS || kind == KindLogin || kind == "" {
			p.escalated = false
		}
		p.successes++
		p.succRun++
		p.failRun = 0
		if kind == "" || kind == KindLogin {
			p.lastOK = now
			s.metrics.lastLogin.WithLabelValues(s.listener, name).Set(float64(now.UnixNano()) / 1e9)
		}
		if p.state == Down && p.succRun >= s.th.Rise {
			p.state, p.changedAt, changed = Up, now, true
		}
	} else {
		p.failures++
		p.failRun++
		p.succRun = 0
		p.lastErrAt = now
		p.escalated = true
		if err != nil {
			p.lastErr = err.Error()
		}
		if kind == "" {
			s.metrics.passiveFailures.WithLabelValues(s.listener, name).Inc()
		}
		if p.state == Up && p.failRun >= s.th.Fall {
			p.state, p.changedAt, changed = Down, now, true
		}
	}
	var watchers []func(string, State)
	var others []Path // paths up when this one went down: where its sessions could go
	st := p.state
	if changed {
		if st == Down {
			for _, o := range s.paths {
				// Up and clean: a path with failures of its own in its current run may be
				// going the same way (every path slow at once).
				if o.state == Up && o.failRun == 0 {
					others = append(others, o.Path)
				}
			}
		}
		v := 0.0
		if st == Up {
			v = 1
		}
		s.metrics.up.WithLabelValues(s.listener, name).Set(v)
		watchers = append(watchers, s.watchers...)
		if best := s.bestLocked(); best != s.best {
			s.metrics.switches.WithLabelValues(s.listener, best).Inc()
			s.best = best
		}
	}
	movers, verify, log := s.movers, s.verify, s.log
	s.mu.Unlock()
	for _, w := range watchers {
		w(name, st)
	}
	if len(others) > 0 && len(movers) > 0 {
		if verify == nil {
			s.move(name, movers)
		} else {
			go s.verifyAndMove(name, others, verify, movers, log)
		}
	}
}

// verifyAndMove tells movers to move the sessions off the down path once one of the others
// passes a probe, if the path is still down then.
func (s *Set) verifyAndMove(down string, others []Path, verify func(Path) error, movers []func(string), log *zap.Logger) {
	for _, o := range others {
		if err := verify(o); err != nil || s.IsDown(o.Name) {
			log.Info("path down, but a path its sessions could move to failed a probe too", zap.String("listener", s.listener),
				zap.String("down", down), zap.String("failed", o.Name), zap.Error(err))
			continue
		}
		if s.IsDown(down) {
			log.Info("path down: another path passed a probe, moving its sessions", zap.String("listener", s.listener),
				zap.String("down", down), zap.String("passed", o.Name))
			s.move(down, movers)
		}
		return
	}
}

func (s *Set) move(path string, movers []func(string)) {
	for _, fn := range movers {
		fn(path)
	}
}

// escalated reports whether the path's next probe must go at least as far as TLS.
func (s *Set) isEscalated(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(name)
	return p != nil && p.escalated
}

func (s *Set) bestLocked() string {
	for _, p := range s.paths {
		if p.state == Up {
			return p.Name
		}
	}
	return ""
}

// AnyUp reports whether at least one path is healthy.
func (s *Set) AnyUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bestLocked() != ""
}

// PathStatus is a path's state for /paths.
type PathStatus struct {
	Name          string    `json:"name"`
	Address       string    `json:"address"`
	TLSServerName string    `json:"tls_server_name"`
	TokenHost     string    `json:"token_host"`
	Region        string    `json:"region,omitempty"`
	State         string    `json:"state"`
	Preferred     bool      `json:"preferred"`
	Since         time.Time `json:"since,omitzero"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	LastLoginAt   time.Time `json:"last_login_at,omitzero"`
	LastProbeAt   time.Time `json:"last_probe_at,omitzero"`
	Successes     uint64    `json:"successes"`
	Failures      uint64    `json:"failures"`
}

// Snapshot returns every path's status in priority order.
func (s *Set) Snapshot() []PathStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := s.bestLocked()
	out := make([]PathStatus, 0, len(s.paths))
	for _, p := range s.paths {
		out = append(out, PathStatus{
			Name: p.Name, Address: p.Address, TLSServerName: p.TLSServerName, TokenHost: p.TokenHost, Region: p.Region,
			State: p.state.String(), Preferred: p.Name == best, Since: p.changedAt,
			LastError: p.lastErr, LastErrorAt: p.lastErrAt, LastLoginAt: p.lastOK, LastProbeAt: p.lastProbe,
			Successes: p.successes, Failures: p.failures,
		})
	}
	return out
}

func (s *Set) find(name string) *pathState {
	for _, p := range s.paths {
		if p.Name == name {
			return p
		}
	}
	return nil
}
