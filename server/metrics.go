package server

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Result labels for berth_reconcile_runs_total.
const (
	RunOK    = "ok"    // the run converged or changed something without error
	RunError = "error" // the run failed or halted a rollout
	RunNoop  = "noop"  // nothing differed from Git
)

// Result labels for berth_webhooks_total.
const (
	webhookTriggered    = "triggered"
	webhookIgnored      = "ignored"
	webhookUnauthorized = "unauthorized"
	webhookBadRequest   = "bad_request"
)

// Metrics holds berth's Prometheus metrics in a registry of their own, so
// /metrics shows berth's series and the Go and process collectors, and
// nothing a library registered globally. All methods are safe for
// concurrent use; a nil *Metrics is valid and records nothing, so code paths
// and tests that run without a server need no guards.
type Metrics struct {
	reg *prometheus.Registry

	runs          *prometheus.CounterVec
	duration      prometheus.Histogram
	runErrors     *prometheus.CounterVec
	gitPolls      prometheus.Counter
	gitFetches    prometheus.Counter
	gitErrors     prometheus.Counter
	revision      *prometheus.GaugeVec
	apps          *prometheus.GaugeVec
	lxdRequests   *prometheus.CounterVec
	webhooks      *prometheus.CounterVec
	triggers      *prometheus.CounterVec
	lastSuccessTS prometheus.Gauge

	// mu makes "reset then set" on the info-style gauges atomic with
	// respect to other setters, so a scrape never sees two revisions
	// because two writers interleaved.
	mu sync.Mutex
}

// NewMetrics creates berth's metrics and registers them, together with the
// Go runtime and process collectors, in a fresh registry.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_reconcile_runs_total",
			Help: "Reconcile runs by result (ok, error, noop).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "berth_reconcile_duration_seconds",
			Help: "Wall time of a reconcile run, observe to apply.",
			// Runs range from a no-op (well under a second) to rollouts
			// that wait on health checks for minutes.
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}),
		runErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_reconcile_errors_total",
			Help: "Reconcile errors by reason (git, lxd, docker, spec, stale, rollout, lease, ...).",
		}, []string{"reason"}),
		gitPolls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_git_polls_total",
			Help: "Checks of the remote branch head.",
		}),
		gitFetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_git_fetches_total",
			Help: "Git fetches that downloaded objects.",
		}),
		gitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "berth_git_errors_total",
			Help: "Failed Git polls or fetches.",
		}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_applied_revision_info",
			Help: "The Git revision last applied; 1 for the current revision only.",
		}, []string{"revision"}),
		apps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_apps",
			Help: "Number of apps per status.",
		}, []string{"status"}),
		lxdRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_lxd_requests_total",
			Help: "Requests made to the LXD API by HTTP method.",
		}, []string{"method"}),
		webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_webhooks_total",
			Help: "Webhook deliveries by provider and result (triggered, ignored, unauthorized, bad_request).",
		}, []string{"provider", "result"}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_triggers_total",
			Help: "Requests for a reconcile run by source (poll, webhook, fsnotify, api, worktree).",
		}, []string{"source"}),
		lastSuccessTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_last_success_timestamp_seconds",
			Help: "Unix time of the end of the last successful reconcile run.",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.runs, m.duration, m.runErrors,
		m.gitPolls, m.gitFetches, m.gitErrors,
		m.revision, m.apps, m.lxdRequests,
		m.webhooks, m.triggers, m.lastSuccessTS,
	)
	// Counters with a closed label set start at zero, so rate() and
	// absent-series alerts work before the first event.
	for _, r := range []string{RunOK, RunError, RunNoop} {
		m.runs.WithLabelValues(r)
	}
	return m
}

// Registry returns the registry holding berth's metrics, for serving or for
// tests.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// RunFinished counts a finished reconcile run with result RunOK, RunError
// or RunNoop and records how long it took.
func (m *Metrics) RunFinished(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(result).Inc()
	m.duration.Observe(d.Seconds())
}

// RunError counts one error of a run. reason must be a short word from a
// fixed set (git, lxd, docker, spec, stale, rollout, lease, ...), never an
// error message, or the series count grows without bound.
func (m *Metrics) RunError(reason string) {
	if m == nil {
		return
	}
	m.runErrors.WithLabelValues(reason).Inc()
}

// GitPolled counts one check of the remote branch head.
func (m *Metrics) GitPolled() {
	if m == nil {
		return
	}
	m.gitPolls.Inc()
}

// GitFetched counts one fetch that brought new objects.
func (m *Metrics) GitFetched() {
	if m == nil {
		return
	}
	m.gitFetches.Inc()
}

// GitError counts one failed poll or fetch.
func (m *Metrics) GitError() {
	if m == nil {
		return
	}
	m.gitErrors.Inc()
}

// SetRevision makes sha the only revision berth_applied_revision_info
// reports (value 1); earlier revisions are removed. An empty sha clears it.
func (m *Metrics) SetRevision(sha string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revision.Reset()
	if sha != "" {
		m.revision.WithLabelValues(sha).Set(1)
	}
}

// SetApps sets berth_apps to the number of apps per status (Ready,
// Degraded, Held, OutOfSync, ...). Statuses missing from counts are
// removed, so a status no app has any more does not linger.
func (m *Metrics) SetApps(counts map[string]int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apps.Reset()
	for status, n := range counts {
		m.apps.WithLabelValues(status).Set(float64(n))
	}
}

// LXDRequest counts one request to the LXD API; the daemon calls it from
// the LXD client's request hook with the HTTP method.
func (m *Metrics) LXDRequest(method string) {
	if m == nil {
		return
	}
	m.lxdRequests.WithLabelValues(method).Inc()
}

// Triggered counts one request for a run from source (poll, webhook,
// fsnotify, api, worktree). A reason as passed to Backend.Trigger is
// accepted too: "webhook:github" counts as "webhook", so the daemon can
// count every trigger in one place, its Trigger method. The server itself
// does not call Triggered, so nothing is counted twice. Coalesced requests
// still count: the metric says how often berth was asked, not how often it
// ran.
func (m *Metrics) Triggered(source string) {
	if m == nil {
		return
	}
	if i := strings.IndexByte(source, ':'); i >= 0 {
		source = source[:i]
	}
	m.triggers.WithLabelValues(source).Inc()
}

// Succeeded records t as the end of the last successful run.
func (m *Metrics) Succeeded(t time.Time) {
	if m == nil {
		return
	}
	m.lastSuccessTS.Set(float64(t.UnixNano()) / 1e9)
}

// webhook counts one webhook delivery; the server calls it.
func (m *Metrics) webhook(provider, result string) {
	if m == nil {
		return
	}
	m.webhooks.WithLabelValues(provider, result).Inc()
}
