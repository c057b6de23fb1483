package health

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the health package's Prometheus metrics, shared by every listener's Set.
type Metrics struct {
	up              *prometheus.GaugeVec
	passiveFailures *prometheus.CounterVec
	lastLogin       *prometheus.GaugeVec
	switches        *prometheus.CounterVec
	probeSeconds    *prometheus.HistogramVec
	probeFailures   *prometheus.CounterVec
	probeSessions   *prometheus.GaugeVec
}

// NewMetrics registers the health metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_health_path_up",
			Help: "1 when the path is considered healthy, 0 when not.",
		}, []string{"listener", "path"}),
		passiveFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_health_passive_failures_total",
			Help: "Failures seen by real connections (dial, TLS, login, sessions dying on network errors).",
		}, []string{"listener", "path"}),
		lastLogin: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_health_last_login_timestamp_seconds",
			Help: "Unix time of the last successful upstream login on the path (real or probe); alert on time() minus this.",
		}, []string{"listener", "path"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_health_path_switches_total",
			Help: "Changes of the path new connections go to first, by the path switched to (\"\" when none is healthy).",
		}, []string{"listener", "to"}),
		probeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rdsvalet_health_probe_duration_seconds",
			Help:    "Active probe latency by kind (tcp, tls, login, ping; opening a kept probe session is a login).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"listener", "path", "kind"}),
		probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_health_probe_failures_total",
			Help: "Failed active probes by kind and reason (timeout, refused, reset, dns, tls, auth, other).",
		}, []string{"listener", "path", "kind", "reason"}),
		probeSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_health_probe_sessions",
			Help: "1 while a logged-in probe session is kept open on the path for pings, 0 when not.",
		}, []string{"listener", "path"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.passiveFailures, m.lastLogin, m.switches, m.probeSeconds, m.probeFailures, m.probeSessions)
	}
	return m
}

func (m *Metrics) initPath(listener, path string) {
	m.up.WithLabelValues(listener, path).Set(1)
	m.passiveFailures.WithLabelValues(listener, path)
	m.lastLogin.WithLabelValues(listener, path)
	m.probeSessions.WithLabelValues(listener, path)
}
