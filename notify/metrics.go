package notify

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts deliveries per target. A nil *Metrics records nothing.
type Metrics struct {
	deliveries, failures, drops *prometheus.CounterVec
}

// NewMetrics creates the notifier's counters and registers them in reg
// (the daemon's registry, so /metrics shows them).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_notify_deliveries_total",
			Help: "Run outcomes delivered, by target (github, gitlab, gitea, webhook).",
		}, []string{"target"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_notify_failures_total",
			Help: "Run outcomes given up on, by target: every attempt failed, or the target refused one (a 4xx other than 429).",
		}, []string{"target"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_notify_dropped_total",
			Help: "Run outcomes dropped unsent because the target's queue was full (the oldest go first), by target.",
		}, []string{"target"}),
	}
	reg.MustRegister(m.deliveries, m.failures, m.drops)
	return m
}

// Init makes each target's series exist at 0, so a rate() or an alert on
// failures works before the first one.
func (m *Metrics) Init(targets ...string) {
	if m == nil {
		return
	}
	for _, t := range targets {
		m.deliveries.WithLabelValues(t)
		m.failures.WithLabelValues(t)
		m.drops.WithLabelValues(t)
	}
}

func (m *Metrics) delivered(target string) {
	if m != nil {
		m.deliveries.WithLabelValues(target).Inc()
	}
}

func (m *Metrics) failed(target string) {
	if m != nil {
		m.failures.WithLabelValues(target).Inc()
	}
}

func (m *Metrics) dropped(target string) {
	if m != nil {
		m.drops.WithLabelValues(target).Inc()
	}
}
