package proxy

import "github.com/prometheus/client_golang/prometheus"

// Connection results, the "result" label of rdsvalet_proxy_connections_total.
const (
	ResultOK              = "ok"
	ResultCancel          = "cancel"
	ResultRefusedLimit    = "refused_limit"
	ResultRefusedDraining = "refused_draining"
	ResultClientError     = "client_error"
	ResultUpstreamRefused = "upstream_refused"
	ResultNoPath          = "no_path"
)

// Reasons a session ended, the "reason" label of rdsvalet_proxy_sessions_closed_total.
const (
	CloseClient   = "client"          // the app closed or the connection to it failed
	CloseUpstream = "upstream"        // the database closed or the connection to it failed
	CloseDrain    = "drain"           // closed while idle because the sidecar is draining
	CloseCut      = "cut"             // cut busy at the drain's deadline
	ClosePathDown = "path_down"       // its path went down: closed when idle, or cut after kill_grace
	CloseSilent   = "upstream_silent" // its request got no byte within session_timeout on a down path
	CloseFailover = "failover"        // its instance lost the listener's role: closed when idle, or cut after kill_grace
	CloseLagging  = "lagging"         // its reader fell behind max_replica_lag: closed when idle
	CloseFallback = "fallback_over"   // a reader listener's session on the writer (reader_fallback) once a reader is fresh again: closed when idle
	CloseBothDone = "completed"       // both sides finished together
)

// Metrics are the proxy's Prometheus metrics, shared by every listener.
type Metrics struct {
	active      *prometheus.GaugeVec
	total       *prometheus.CounterVec
	handshake   *prometheus.HistogramVec
	upstreamDur *prometheus.HistogramVec
	bytes       *prometheus.CounterVec
	closed      *prometheus.CounterVec
}

// NewMetrics registers the proxy metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_proxy_connections_active",
			Help: "App connections currently open, handshaking or relaying.",
		}, []string{"listener", "engine"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_proxy_connections_total",
			Help: "App connections accepted, by how their handshake ended.",
		}, []string{"listener", "engine", "result"}),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rdsvalet_proxy_handshake_duration_seconds",
			Help:    "Time from accepting an app connection to relaying its session (startup, upstream TLS, login).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"listener", "engine", "result"}),
		upstreamDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rdsvalet_proxy_upstream_login_duration_seconds",
			Help:    "Time to dial, TLS-handshake and log in upstream on one path, by result: ok, or the failure's class (path: the path is broken; answered: the database refused; secret: no token or password).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"listener", "path", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_proxy_bytes_total",
			Help: "Bytes relayed, by direction (upstream: app to database; downstream: database to app).",
		}, []string{"listener", "direction"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_proxy_sessions_closed_total",
			Help: "Relayed sessions that ended, by reason.",
		}, []string{"listener", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.active, m.total, m.handshake, m.upstreamDur, m.bytes, m.closed)
	}
	return m
}

// ObserveLogin records one upstream login attempt by result: "ok" or the failure's class
// (path, answered, secret; see docs/reliability.md).
func (m *Metrics) ObserveLogin(listener, path, result string, seconds float64) {
	m.upstreamDur.WithLabelValues(listener, path, result).Observe(seconds)
}

// serverMetrics are one listener's series, looked up once: a label lookup hashes the labels
// and takes the vector's lock, several times per app connection otherwise.
type serverMetrics struct {
	m                  *Metrics
	listener, engine   string
	active             prometheus.Gauge
	bytesUp, bytesDown prometheus.Counter
	totalOK            prometheus.Counter
	handshakeOK        prometheus.Observer
	closedBy           map[string]prometheus.Counter
}

func (m *Metrics) forListener(listener, engine string) serverMetrics {
	sm := serverMetrics{
		m: m, listener: listener, engine: engine,
		active:      m.active.WithLabelValues(listener, engine),
		bytesUp:     m.bytes.WithLabelValues(listener, "upstream"),
		bytesDown:   m.bytes.WithLabelValues(listener, "downstream"),
		totalOK:     m.total.WithLabelValues(listener, engine, ResultOK),
		handshakeOK: m.handshake.WithLabelValues(listener, engine, ResultOK),
		closedBy:    map[string]prometheus.Counter{},
	}
	for _, r := range closeReasons {
		sm.closedBy[r] = m.closed.WithLabelValues(listener, r)
	}
	return sm
}

func (sm *serverMetrics) total(result string) prometheus.Counter {
	if result == ResultOK {
		return sm.totalOK
	}
	return sm.m.total.WithLabelValues(sm.listener, sm.engine, result)
}

func (sm *serverMetrics) handshake(result string) prometheus.Observer {
	if result == ResultOK {
		return sm.handshakeOK
	}
	return sm.m.handshake.WithLabelValues(sm.listener, sm.engine, result)
}

func (sm *serverMetrics) closed(reason string) prometheus.Counter {
	if c, ok := sm.closedBy[reason]; ok {
		return c
	}
	return sm.m.closed.WithLabelValues(sm.listener, reason)
}

var closeReasons = []string{CloseClient, CloseUpstream, CloseDrain, CloseCut, ClosePathDown, CloseSilent, CloseFailover, CloseLagging, CloseFallback, CloseBothDone}

func (m *Metrics) init(listener, engine string) {
	m.active.WithLabelValues(listener, engine)
	for _, r := range []string{ResultOK, ResultCancel, ResultRefusedLimit, ResultRefusedDraining, ResultClientError, ResultUpstreamRefused, ResultNoPath} {
		m.total.WithLabelValues(listener, engine, r)
	}
	for _, d := range []string{"upstream", "downstream"} {
		m.bytes.WithLabelValues(listener, d)
	}
	for _, r := range closeReasons {
		m.closed.WithLabelValues(listener, r)
	}
}
