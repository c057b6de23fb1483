package topology

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the topology monitor's Prometheus metrics, shared by every cluster listener.
type Metrics struct {
	failovers       *prometheus.CounterVec
	failoverSeconds *prometheus.HistogramVec
	lag             *prometheus.GaugeVec
	role            *prometheus.GaugeVec
	current         *prometheus.GaugeVec
	writers         *prometheus.GaugeVec
	sessions        *prometheus.GaugeVec
	mismatches      *prometheus.CounterVec
	checks          *prometheus.CounterVec
}

// NewMetrics registers the topology metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_topology_failovers_total",
			Help: "Writer changes: a new instance answered as writer after the writer was lost.",
		}, []string{"listener"}),
		failoverSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rdsvalet_topology_failover_duration_seconds",
			Help:    "From the writer seen lost (failed checks, or answering read-only) to a new writer seen answering.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120},
		}, []string{"listener"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_topology_replica_lag_seconds",
			Help: "A reader's replication lag as last checked; -1 when it cannot say (replication stopped) or is not a reader.",
		}, []string{"listener", "instance"}),
		role: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_topology_instance_role",
			Help: "1 for the role the instance answered with at its last check (writer, reader, unknown).",
		}, []string{"listener", "instance", "role"}),
		current: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_topology_writer",
			Help: "1 for the instance writer sessions go to, 0 for the others.",
		}, []string{"listener", "instance"}),
		writers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_topology_writers_answering",
			Help: "How many instances answered as writer at their last check (more than 1: two writers).",
		}, []string{"listener"}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "rdsvalet_topology_sessions",
			Help: "Live app sessions on the instance (updated at each check).",
		}, []string{"listener", "instance"}),
		mismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_topology_role_mismatches_total",
			Help: "Logins refused before the app was greeted because the instance's role check did not match the listener's role.",
		}, []string{"listener", "instance"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rdsvalet_topology_checks_total",
			Help: "Role and lag checks of each instance by result (ok, failed).",
		}, []string{"listener", "instance", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.failovers, m.failoverSeconds, m.lag, m.role, m.current, m.writers, m.sessions, m.mismatches, m.checks)
	}
	return m
}

func (m *Metrics) initListener(listener string) {
	m.failovers.WithLabelValues(listener)
	m.failoverSeconds.WithLabelValues(listener)
	m.writers.WithLabelValues(listener)
}

func (m *Metrics) initInstance(listener, instance string) {
	m.lag.WithLabelValues(listener, instance).Set(-1)
	m.current.WithLabelValues(listener, instance)
	m.sessions.WithLabelValues(listener, instance)
	m.mismatches.WithLabelValues(listener, instance)
	m.setInstance(listener, instance, Unknown, 0, false)
	for _, r := range []string{"ok", "failed"} {
		m.checks.WithLabelValues(listener, instance, r)
	}
}

func (m *Metrics) setInstance(listener, instance string, role Role, lag time.Duration, known bool) {
	for _, r := range []Role{Writer, Reader, Unknown} {
		v := 0.0
		if r == role {
			v = 1
		}
		m.role.WithLabelValues(listener, instance, string(r)).Set(v)
	}
	if role == Reader && known {
		m.lag.WithLabelValues(listener, instance).Set(lag.Seconds())
	} else {
		m.lag.WithLabelValues(listener, instance).Set(-1)
	}
}
