package server

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Result labels for berth_reconcile_runs_total (the loop's results).
const (
	RunOK    = "ok"    // changes applied, every app converged
	RunError = "error" // the run failed or halted a rollout
	RunNoop  = "noop"  // nothing differed from Git
	RunHeld  = "held"  // the run ended, but an app was held (invalid spec, failed revision) or the specs had errors
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
	appStatus     *prometheus.GaugeVec
	appRevision   *prometheus.GaugeVec
	specErrors    prometheus.Gauge
	outdatedBase  *prometheus.GaugeVec
	unobserved    *prometheus.GaugeVec
	retained      *prometheus.GaugeVec
	retainedBytes *prometheus.GaugeVec
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
			Help: "Reconcile runs by result: ok (applied, all converged), noop, held (an app held: invalid spec or failed revision), error.",
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
			Help: "The last Git revision every app converged to (a run with result ok or noop); 1 for that revision only.",
		}, []string{"revision"}),
		apps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_apps",
			Help: "Number of apps per status (as in berth_app_status).",
		}, []string{"status"}),
		appStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_app_status",
			Help: "1 for each app's current status: Invalid, Stalled, Held, Degraded, Missing, Progressing, OutOfSync, Orphaned or Healthy.",
		}, []string{"app", "status"}),
		appRevision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_app_revision_info",
			Help: "Per app, the last Git revision that rolled out fully; 1 for that revision only.",
		}, []string{"app", "revision"}),
		specErrors: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_spec_errors",
			Help: "Spec diagnostics (invalid fields, files that do not parse) in the revision last loaded.",
		}),
		outdatedBase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_replicas_outdated_base_image",
			Help: "Per app, replicas built from another image than the one their system.image alias points to now (a base OS update not rolled out yet).",
		}, []string{"app"}),
		unobserved: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_replicas_unobserved",
			Help: "Per app, running replicas whose Docker could not be looked at in the last run because LXD did not set up the exec tunnel: their state is unknown, and steps on their containers wait.",
		}, []string{"app"}),
		retained: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_volumes_retained",
			Help: "Per app, volumes of spec.system.volumes that no instance has attached: kept by onScaleDown or onAppDelete: retain, for a scale-up or the app's return.",
		}, []string{"app"}),
		retainedBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "berth_volumes_retained_bytes",
			Help: "Per app, the sum of the sizes (quotas) of its retained volumes, in bytes.",
		}, []string{"app"}),
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
		m.revision, m.apps, m.appStatus, m.appRevision, m.specErrors, m.outdatedBase, m.unobserved, m.retained, m.retainedBytes, m.lxdRequests,
		m.webhooks, m.triggers, m.lastSuccessTS,
	)
	// Counters with a closed label set start at zero, so rate() and
	// absent-series alerts work before the first event.
	for _, r := range []string{RunOK, RunError, RunNoop, RunHeld} {
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
// The daemon calls it only for a revision every app converged to.
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

// SetApps takes every app's status (app -> Healthy, Degraded, Held,
// Invalid, ...): berth_app_status gets one series per app, value 1, and
// berth_apps the number of apps per status. Apps and statuses missing
// from statuses are removed, so nothing lingers.
func (m *Metrics) SetApps(statuses map[string]string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apps.Reset()
	m.appStatus.Reset()
	counts := map[string]int{}
	for app, status := range statuses {
		counts[status]++
		m.appStatus.WithLabelValues(app, status).Set(1)
	}
	for status, n := range counts {
		m.apps.WithLabelValues(status).Set(float64(n))
	}
}

// SetOutdatedBaseImages sets berth_replicas_outdated_base_image: per app,
// the replicas on an outdated base image. Apps missing from counts are
// removed.
func (m *Metrics) SetOutdatedBaseImages(counts map[string]int) {
	m.setPerApp(m.outdatedBase, counts)
}

// SetUnobservedReplicas sets berth_replicas_unobserved: per app, the
// running replicas whose Docker could not be looked at. Apps missing from
// counts are removed.
func (m *Metrics) SetUnobservedReplicas(counts map[string]int) {
	m.setPerApp(m.unobserved, counts)
}

// SetRetainedVolumes sets berth_volumes_retained and
// berth_volumes_retained_bytes: per app, the volumes no instance has
// attached and their sizes. Apps missing from counts are removed.
func (m *Metrics) SetRetainedVolumes(counts map[string]int, bytes map[string]uint64) {
	m.setPerApp(m.retained, counts)
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.retainedBytes.Reset()
	for app, n := range bytes {
		m.retainedBytes.WithLabelValues(app).Set(float64(n))
	}
}

// setPerApp replaces every series of a per-app gauge with counts.
func (m *Metrics) setPerApp(g *prometheus.GaugeVec, counts map[string]int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	g.Reset()
	for app, n := range counts {
		g.WithLabelValues(app).Set(float64(n))
	}
}

// SetAppRevisions sets berth_app_revision_info: per app, the last revision
// that rolled out fully. Apps missing from revisions are removed.
func (m *Metrics) SetAppRevisions(revisions map[string]string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.appRevision.Reset()
	for app, sha := range revisions {
		if sha != "" {
			m.appRevision.WithLabelValues(app, sha).Set(1)
		}
	}
}

// SetSpecErrors sets berth_spec_errors, the number of spec diagnostics of
// the revision last loaded.
func (m *Metrics) SetSpecErrors(n int) {
	if m == nil {
		return
	}
	m.specErrors.Set(float64(n))
}

// LXDEndpoint exposes berth_lxd_endpoint_info{url}: 1 for the LXD
// endpoint in use, read from endpoint at each scrape (it changes when a
// cluster member stops answering).
func (m *Metrics) LXDEndpoint(endpoint func() string) {
	if m == nil || endpoint == nil {
		return
	}
	m.reg.MustRegister(endpointCollector{endpoint})
}

var endpointDesc = prometheus.NewDesc("berth_lxd_endpoint_info",
	"1 for the LXD endpoint in use: with several cluster members given (--lxd a,b,c), the one that answered last.",
	[]string{"url"}, nil)

type endpointCollector struct{ endpoint func() string }

func (c endpointCollector) Describe(ch chan<- *prometheus.Desc) { ch <- endpointDesc }

func (c endpointCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(endpointDesc, prometheus.GaugeValue, 1, c.endpoint())
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
