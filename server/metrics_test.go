package server

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics through the server and parses the exposition.
func scrape(t *testing.T, f *fixture) map[string]bool {
	t.Helper()
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics = %d %q", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(io.Reader(rec.Body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	names := map[string]bool{}
	for n := range fams {
		names[n] = true
	}
	return names
}

func TestMetricsExposition(t *testing.T) {
	f := newFixture(t, false)
	m := f.metrics
	m.RunFinished(RunOK, 1500*time.Millisecond)
	m.RunError("lxd")
	m.GitPolled()
	m.GitFetched()
	m.GitError()
	m.SetRevision("abc123")
	m.SetApps(map[string]string{"web": "Healthy", "api": "Degraded", "db": "Invalid"})
	m.SetAppRevisions(map[string]string{"web": "abc123"})
	m.SetSpecErrors(2)
	m.SetRetainedVolumes(map[string]int{"kv": 1}, map[string]uint64{"kv": 1 << 30})
	m.LXDRequest("GET")
	m.Triggered("poll")
	m.Succeeded(time.Unix(1700000000, 0))
	// berth_webhooks_total is counted by the server itself.
	f.do(t, "POST", "/hooks/github", []byte(pushMain), githubHeaders("push", []byte(pushMain), testSecret))

	names := scrape(t, f)
	for _, want := range []string{
		"berth_reconcile_runs_total",
		"berth_reconcile_duration_seconds",
		"berth_reconcile_errors_total",
		"berth_git_polls_total",
		"berth_git_fetches_total",
		"berth_git_errors_total",
		"berth_applied_revision_info",
		"berth_apps",
		"berth_app_status",
		"berth_app_revision_info",
		"berth_spec_errors",
		"berth_volumes_retained",
		"berth_volumes_retained_bytes",
		"berth_lxd_requests_total",
		"berth_webhooks_total",
		"berth_triggers_total",
		"berth_last_success_timestamp_seconds",
		"go_goroutines",
		"process_start_time_seconds",
	} {
		if !names[want] {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for n := range names {
		if !strings.HasPrefix(n, "berth_") && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
			t.Errorf("unexpected metric family %s", n)
		}
	}
}

func TestMetricsValues(t *testing.T) {
	m := NewMetrics()

	m.RunFinished(RunNoop, time.Second)
	m.RunFinished(RunNoop, time.Second)
	if got := testutil.ToFloat64(m.runs.WithLabelValues(RunNoop)); got != 2 {
		t.Errorf("runs{noop} = %v", got)
	}
	if got := testutil.CollectAndCount(m.runs); got != 4 {
		t.Errorf("runs series = %d, want ok, error, noop, held pre-set", got)
	}

	m.SetRevision("aaa")
	m.SetRevision("bbb")
	if got := testutil.CollectAndCount(m.revision); got != 1 {
		t.Errorf("revision series = %d, want 1", got)
	}
	if got := testutil.ToFloat64(m.revision.WithLabelValues("bbb")); got != 1 {
		t.Errorf("revision{bbb} = %v", got)
	}
	m.SetRevision("")
	if got := testutil.CollectAndCount(m.revision); got != 0 {
		t.Errorf("revision series after clear = %d", got)
	}

	m.SetApps(map[string]string{"a": "Healthy", "b": "Healthy", "c": "Held"})
	m.SetApps(map[string]string{"a": "Healthy", "b": "Degraded"})
	err := testutil.CollectAndCompare(m.apps, strings.NewReader(`
# HELP berth_apps Number of apps per status (as in berth_app_status).
# TYPE berth_apps gauge
berth_apps{status="Degraded"} 1
berth_apps{status="Healthy"} 1
`))
	if err != nil {
		t.Error(err)
	}

	m.Triggered("webhook:github")
	m.Triggered("webhook:gitlab")
	m.Triggered("api")
	if got := testutil.ToFloat64(m.triggers.WithLabelValues("webhook")); got != 2 {
		t.Errorf("triggers{webhook} = %v", got)
	}

	m.Succeeded(time.Unix(1700000000, 500_000_000))
	if got := testutil.ToFloat64(m.lastSuccessTS); got != 1700000000.5 {
		t.Errorf("last success = %v", got)
	}

	// Retained volumes: an app that no longer has any falls back to 0,
	// one gone from the status loses its series.
	m.SetRetainedVolumes(map[string]int{"kv": 2, "old": 1}, map[string]uint64{"kv": 3 << 30, "old": 1 << 20})
	m.SetRetainedVolumes(map[string]int{"kv": 1, "web": 0}, map[string]uint64{"kv": 1 << 30, "web": 0})
	err = testutil.CollectAndCompare(m.retained, strings.NewReader(`
# HELP berth_volumes_retained Per app, volumes of spec.system.volumes that no instance has attached: kept by onScaleDown or onAppDelete: retain, for a scale-up or the app's return.
# TYPE berth_volumes_retained gauge
berth_volumes_retained{app="kv"} 1
berth_volumes_retained{app="web"} 0
`))
	if err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(m.retainedBytes.WithLabelValues("kv")); got != 1<<30 {
		t.Errorf("retained bytes{kv} = %v", got)
	}
	if got := testutil.CollectAndCount(m.retainedBytes); got != 2 {
		t.Errorf("retained bytes series = %d, want 2", got)
	}
}

// A nil *Metrics records nothing and does not panic.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.RunFinished(RunOK, time.Second)
	m.RunError("git")
	m.GitPolled()
	m.GitFetched()
	m.GitError()
	m.SetRevision("x")
	m.SetApps(map[string]string{"web": "Healthy"})
	m.SetAppRevisions(map[string]string{"web": "x"})
	m.SetSpecErrors(1)
	m.LXDRequest("GET")
	m.Triggered("poll")
	m.Succeeded(time.Now())
	m.webhook("github", webhookTriggered)
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
}

// TestMetricsShowHeldAndInvalidApps: with one app held for an invalid spec
// and one held after a failed rollout, /metrics says so per app, counts
// them apart from the healthy ones, and the errors are countable.
func TestMetricsShowHeldAndInvalidApps(t *testing.T) {
	m := NewMetrics()
	m.SetApps(map[string]string{"web": "Healthy", "api": "Invalid", "worker": "Held"})
	m.SetAppRevisions(map[string]string{"web": "bbb", "api": "aaa", "worker": "aaa"})
	m.SetSpecErrors(3)
	m.RunFinished(RunHeld, time.Second)
	err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(`
# HELP berth_app_revision_info Per app, the last Git revision that rolled out fully; 1 for that revision only.
# TYPE berth_app_revision_info gauge
berth_app_revision_info{app="api",revision="aaa"} 1
berth_app_revision_info{app="web",revision="bbb"} 1
berth_app_revision_info{app="worker",revision="aaa"} 1
# HELP berth_app_status 1 for each app's current status: Invalid, Stalled, Held, Degraded, Missing, Progressing, OutOfSync, Orphaned or Healthy.
# TYPE berth_app_status gauge
berth_app_status{app="api",status="Invalid"} 1
berth_app_status{app="web",status="Healthy"} 1
berth_app_status{app="worker",status="Held"} 1
# HELP berth_apps Number of apps per status (as in berth_app_status).
# TYPE berth_apps gauge
berth_apps{status="Healthy"} 1
berth_apps{status="Held"} 1
berth_apps{status="Invalid"} 1
# HELP berth_reconcile_runs_total Reconcile runs by result: ok (applied, all converged), noop, held (an app held: invalid spec or failed revision), error.
# TYPE berth_reconcile_runs_total counter
berth_reconcile_runs_total{result="error"} 0
berth_reconcile_runs_total{result="held"} 1
berth_reconcile_runs_total{result="noop"} 0
berth_reconcile_runs_total{result="ok"} 0
# HELP berth_spec_errors Spec diagnostics (invalid fields, files that do not parse) in the revision last loaded.
# TYPE berth_spec_errors gauge
berth_spec_errors 3
`), "berth_app_revision_info", "berth_app_status", "berth_apps", "berth_reconcile_runs_total", "berth_spec_errors")
	if err != nil {
		t.Error(err)
	}
	// The app fixed: its Invalid series goes, nothing lingers.
	m.SetApps(map[string]string{"web": "Healthy", "api": "Healthy"})
	if got := testutil.CollectAndCount(m.appStatus); got != 2 {
		t.Errorf("app status series = %d, want 2", got)
	}
	if got := testutil.ToFloat64(m.apps.WithLabelValues("Healthy")); got != 2 {
		t.Errorf("apps{Healthy} = %v", got)
	}
}
