package inject

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts admission decisions, so a platform team can alert on denials and on pods
// admitted without their sidecar (failure policy Ignore).
type Metrics struct {
	admissions *prometheus.CounterVec
}

// NewMetrics registers the injector's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rdsvalet_inject_admissions_total",
		Help: "Admission reviews answered, by result (injected, not-requested, namespace-skipped, already-injected, ignored, denied, failed-open, malformed).",
	}, []string{"result"})}
	if err := reg.Register(m.admissions); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) observe(result string) {
	if m == nil {
		return
	}
	m.admissions.WithLabelValues(result).Inc()
}
