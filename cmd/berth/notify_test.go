package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/notify"
	"github.com/berth-gitops/berth/server"
)

// The notify flags refuse what cannot work before the daemon starts.
func TestNotifyFlagsRefuseWhatCannotWork(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("tok\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	for _, tc := range []struct {
		f      notifyFlags
		remote string
		want   string
	}{
		{notifyFlags{commitStatus: "github", commitStatusTokenFile: tok}, "/srv/apps", "give --commit-status-repo"},
		{notifyFlags{commitStatus: "gitea", commitStatusTokenFile: tok}, "https://git.example.org/acme/apps.git", "needs --commit-status-url"},
		{notifyFlags{commitStatus: "gitlab", commitStatusTokenFile: tok}, "https://gitlab.example.org/ops/apps.git", "needs --commit-status-url"},
		{notifyFlags{commitStatus: "github"}, "https://github.com/acme/apps.git", "needs --commit-status-token-file"},
		{notifyFlags{commitStatus: "github", commitStatusTokenFile: empty}, "https://github.com/acme/apps.git", "is empty"},
		{notifyFlags{commitStatus: "github", commitStatusTokenFile: filepath.Join(dir, "missing")}, "https://github.com/acme/apps.git", "no such file"},
		{notifyFlags{commitStatus: "github", commitStatusTokenFile: tok, commitStatusRepo: "just-a-name"}, "/srv/apps", "want owner/name"},
		{notifyFlags{commitStatusURL: "https://x"}, "/srv/apps", "--commit-status-url needs --commit-status"},
		{notifyFlags{notifyURL: "https://hooks.example.org/berth"}, "/srv/apps", "needs --notify-secret-file"},
		{notifyFlags{notifySecretFile: tok}, "/srv/apps", "--notify-secret-file needs --notify-url"},
		{notifyFlags{notifyURL: "hooks.example.org", notifySecretFile: tok}, "/srv/apps", "want an http(s) URL"},
	} {
		_, err := tc.f.notifier(tc.remote, "berth", clock.Real, server.NewMetrics(), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v with --repo %s: error %v, want %q", tc.f, tc.remote, err, tc.want)
		}
	}
	// Derived from --repo: the repository, the public API, the context.
	f := notifyFlags{commitStatus: "github", commitStatusTokenFile: tok}
	n, err := f.notifier("git@github.com:acme/apps.git", "prod", clock.Real, server.NewMetrics(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	cs := n.Targets[0].(*notify.CommitStatus)
	if cs.Repo != "acme/apps" || cs.API != "https://api.github.com" || cs.Context != "berth/prod" {
		t.Errorf("derived %+v", cs)
	}
	if n, err := (&notifyFlags{}).notifier("/srv/apps", "berth", clock.Real, server.NewMetrics(), slog.New(slog.DiscardHandler)); n != nil || err != nil {
		t.Errorf("no notify flags: %v %v", n, err)
	}
}

// forgeRecorder is a fake GitHub commit status API and webhook receiver
// that records what it receives.
type forgeRecorder struct {
	srv      *httptest.Server
	mu       sync.Mutex
	statuses []recordedStatus
	hooks    []notify.Payload
	badSigs  int
}

type recordedStatus struct {
	SHA, Auth                         string
	State, Description, Context, Link string
}

func newForgeRecorder(t *testing.T, secret string) *forgeRecorder {
	f := &forgeRecorder{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case r.Method == "POST" && strings.HasPrefix(r.URL.Path, "/repos/acme/apps/statuses/"):
			var b struct {
				State, Description, Context string
				Link                        string `json:"target_url"`
			}
			if err := json.Unmarshal(body, &b); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f.statuses = append(f.statuses, recordedStatus{SHA: strings.TrimPrefix(r.URL.Path, "/repos/acme/apps/statuses/"),
				Auth: r.Header.Get("Authorization"), State: b.State, Description: b.Description, Context: b.Context, Link: b.Link})
			w.WriteHeader(http.StatusCreated)
		case r.Method == "POST" && r.URL.Path == "/hook":
			if notify.Verify([]byte(secret), body, r.Header.Get(notify.DeliveryHeader), r.Header.Get(notify.SignatureHeader), time.Now(), notify.DefaultMaxAge) != nil {
				f.badSigs++
				http.Error(w, "bad signature", http.StatusUnauthorized)
				return
			}
			var p notify.Payload
			if err := json.Unmarshal(body, &p); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			f.hooks = append(f.hooks, p)
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// status returns the last status posted for sha.
func (f *forgeRecorder) status(sha string) (recordedStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.statuses) - 1; i >= 0; i-- {
		if f.statuses[i].SHA == sha {
			return f.statuses[i], true
		}
	}
	return recordedStatus{}, false
}

func (f *forgeRecorder) hook(sha string, state notify.State) (notify.Payload, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.hooks {
		if p.Revision == sha && p.State == state {
			return p, true
		}
	}
	return notify.Payload{}, false
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, d *daemon, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			st, _ := d.status()
			b, _ := json.MarshalIndent(st, "", "  ")
			t.Fatalf("timed out waiting for %s\nstatus: %s\nlog:\n%s", what, b, tail(d.log(), 40))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestCommitStatusAndWebhookEndToEnd: a daemon on real LXD posts success
// on a commit that converges and failure, with the reason, on a commit
// whose image never becomes healthy, to a fake GitHub and a webhook
// receiver that checks every signature.
func TestCommitStatusAndWebhookEndToEnd(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	dir := t.TempDir()
	tok, secret := filepath.Join(dir, "token"), filepath.Join(dir, "secret")
	os.WriteFile(tok, []byte("ghp_test\n"), 0o600)
	os.WriteFile(secret, []byte("hook-key\n"), 0o600)
	forge := newForgeRecorder(t, "hook-key")

	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(1, "hello:1"))
	good := r.commit("web: hello:1")
	d := startDaemon(t, "--project", project, "--owner", "e2e", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h",
		"--commit-status", "github", "--commit-status-url", forge.srv.URL, "--commit-status-repo", "acme/apps",
		"--commit-status-token-file", tok, "--commit-status-link", "https://berth.example.org/",
		"--notify-url", forge.srv.URL+"/hook", "--notify-secret-file", secret)

	waitUntil(t, d, "success on the converging commit", 3*time.Minute, func() bool {
		s, ok := forge.status(good)
		return ok && s.State == "success"
	})
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "hello:1"})
	s, _ := forge.status(good)
	if s.Auth != "Bearer ghp_test" || s.Context != "berth/e2e" || s.Link != "https://berth.example.org/" || s.Description != "1 app converged at "+good[:12] {
		t.Errorf("status of the good commit: %+v", s)
	}

	t.Log("a broken image: the rollout halts, and the commit gets failure with the reason")
	r.write("apps/web.yaml", webSpec(1, "broken:1"))
	bad := r.commit("web: broken image")
	waitUntil(t, d, "failure on the broken commit", 4*time.Minute, func() bool {
		s, ok := forge.status(bad)
		return ok && s.State == "failure"
	})
	s, _ = forge.status(bad)
	t.Logf("the broken commit's status: %s %q", s.State, s.Description)
	if !strings.Contains(s.Description, "web ") || !strings.Contains(s.Description, "web-0") || !strings.Contains(s.Description, "unhealthy") ||
		len([]rune(s.Description)) > 140 {
		t.Errorf("failure description %q: want web's reason (web-0 ... unhealthy), at most 140 characters", s.Description)
	}
	// From outside: web-0 runs the broken container, and no status ever
	// called that commit a success.
	wantReplicas(t, liveState(t, c, "e2e"), "web", map[string]string{"web-0": "broken:1"})
	forge.mu.Lock()
	for _, st := range forge.statuses {
		if st.SHA == bad && st.State == "success" {
			t.Errorf("the broken commit got success: %+v", st)
		}
	}
	forge.mu.Unlock()

	waitUntil(t, d, "the webhook deliveries", time.Minute, func() bool {
		_, ok1 := forge.hook(good, notify.Success)
		_, ok2 := forge.hook(bad, notify.Failure)
		return ok1 && ok2
	})
	p, _ := forge.hook(bad, notify.Failure)
	if p.Subject != "web: broken image" || p.Result == "ok" || len(p.Apps) != 1 || p.Apps[0].Name != "web" ||
		!strings.Contains(p.Apps[0].Reason, "unhealthy") || p.Finished.Before(p.Started) {
		t.Errorf("webhook payload for the broken commit: %+v", p)
	}
	if forge.badSigs != 0 {
		t.Errorf("%d deliveries with a bad signature", forge.badSigs)
	}

	resp, err := http.Get(d.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`berth_notify_failures_total{target="github"} 0`, `berth_notify_failures_total{target="webhook"} 0`,
		`berth_notify_deliveries_total{target="github"}`, `berth_notify_dropped_total{target="webhook"} 0`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code := d.stop(); code != 0 {
		t.Errorf("daemon exited %d", code)
	}
}
