// Package health knows which upstream paths of a listener are usable: it keeps each path's
// state from the outcome of real dials (passive health) and answers which paths new
// connections should try, best first.
package health

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Path is one network route to the database. Address is dialed; the TLS certificate must name
// TLSServerName; the IAM token is signed for TokenHost (host:port). Behind a PrivateLink
// endpoint or an NLB the last two are the RDS endpoint's real name, not the dialed one.
type Path struct {
	Name          string
	Address       string
	TLSServerName string
	TokenHost     string
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

// Set is one listener's paths in priority order with their health.
type Set struct {
	listener string
	now      func() time.Time
	metrics  *Metrics

	mu    sync.Mutex
	paths []*pathState
}

type pathState struct {
	Path
	state        State
	lastErr      string
	lastErrAt    time.Time
	lastOK       time.Time
	failures     uint64
	successes    uint64
	consecutiveF int
}

// Metrics are the health package's Prometheus metrics, shared by every listener's Set.
type Metrics struct {
	up       *prometheus.GaugeVec
	failures *prometheus.CounterVec
	lastOK   *prometheus.GaugeVec
}

// NewMetrics registers the health metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_health_path_up",
			Help: "1 when the path is considered healthy, 0 when not.",
		}, []string{"listener", "path"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_health_path_failures_total",
			Help: "Failed attempts to use a path, from real connections.",
		}, []string{"listener", "path"}),
		lastOK: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_health_path_last_success_timestamp_seconds",
			Help: "Unix time of the last successful upstream login on the path.",
		}, []string{"listener", "path"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.failures, m.lastOK)
	}
	return m
}

// NewSet returns the paths of one listener, all assumed up until a dial says otherwise.
func NewSet(listener string, paths []Path, m *Metrics) *Set {
	s := &Set{listener: listener, now: time.Now, metrics: m}
	for _, p := range paths {
		s.paths = append(s.paths, &pathState{Path: p})
		if m != nil {
			m.up.WithLabelValues(listener, p.Name).Set(1)
			m.failures.WithLabelValues(listener, p.Name)
		}
	}
	return s
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
	for _, p := range s.paths {
		if p.Name == name {
			return p.Path, true
		}
	}
	return Path{}, false
}

// ReportSuccess records a successful login on the path.
func (s *Set) ReportSuccess(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(name)
	if p == nil {
		return
	}
	p.successes++
	p.consecutiveF = 0
	p.lastOK = s.now()
	p.state = Up
	if s.metrics != nil {
		s.metrics.up.WithLabelValues(s.listener, name).Set(1)
		s.metrics.lastOK.WithLabelValues(s.listener, name).Set(float64(p.lastOK.UnixNano()) / 1e9)
	}
}

// ReportFailure records a failed attempt to reach the upstream over the path. A failed real
// dial counts at once: the path is marked down so that the next connection skips it.
func (s *Set) ReportFailure(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.find(name)
	if p == nil {
		return
	}
	p.failures++
	p.consecutiveF++
	p.lastErrAt = s.now()
	if err != nil {
		p.lastErr = err.Error()
	}
	p.state = Down
	if s.metrics != nil {
		s.metrics.up.WithLabelValues(s.listener, name).Set(0)
		s.metrics.failures.WithLabelValues(s.listener, name).Inc()
	}
}

// AnyUp reports whether at least one path is healthy.
func (s *Set) AnyUp() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.paths {
		if p.state == Up {
			return true
		}
	}
	return false
}

// PathStatus is a path's state for /paths.
type PathStatus struct {
	Name          string    `json:"name"`
	Address       string    `json:"address"`
	TLSServerName string    `json:"tls_server_name"`
	TokenHost     string    `json:"token_host"`
	State         string    `json:"state"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorAt   time.Time `json:"last_error_at,omitzero"`
	LastSuccessAt time.Time `json:"last_success_at,omitzero"`
	Successes     uint64    `json:"successes"`
	Failures      uint64    `json:"failures"`
}

// Snapshot returns every path's status in priority order.
func (s *Set) Snapshot() []PathStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PathStatus, 0, len(s.paths))
	for _, p := range s.paths {
		out = append(out, PathStatus{
			Name: p.Name, Address: p.Address, TLSServerName: p.TLSServerName, TokenHost: p.TokenHost,
			State: p.state.String(), LastError: p.lastErr, LastErrorAt: p.lastErrAt, LastSuccessAt: p.lastOK,
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
