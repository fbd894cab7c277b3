package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/reconciler"
)

// received is one request a fake forge got.
type received struct {
	Method, Path string
	Header       http.Header
	Body         []byte
}

// fakeForge records every request and answers with the next code of
// codes (the last one repeats); block makes it hold each request until
// the client gives up.
type fakeForge struct {
	srv   *httptest.Server
	mu    sync.Mutex
	got   []received
	codes []int
	block bool
	seen  chan struct{} // one value per request, after it is recorded
}

func newFakeForge(t *testing.T, codes ...int) *fakeForge {
	f := &fakeForge{codes: codes, seen: make(chan struct{}, 100)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.got = append(f.got, received{r.Method, r.URL.EscapedPath(), r.Header.Clone(), body})
		code := http.StatusCreated
		if len(f.codes) > 0 {
			code = f.codes[0]
			if len(f.codes) > 1 {
				f.codes = f.codes[1:]
			}
		}
		block := f.block
		f.mu.Unlock()
		f.seen <- struct{}{}
		if block {
			<-r.Context().Done()
			return
		}
		if code == http.StatusTooManyRequests {
			w.Header().Set("Retry-After", "7")
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"message":"fake"}`)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeForge) requests() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.got...)
}

// harness runs a Notifier on a fake clock and reports its backoff waits
// and finished deliveries on channels.
type harness struct {
	n     *Notifier
	clk   *clock.Fake
	waits chan time.Duration
	done  chan bool
	reg   *prometheus.Registry
}

func newHarness(t *testing.T, targets ...Target) *harness {
	h := &harness{clk: clock.NewFake(t0), waits: make(chan time.Duration, 100), done: make(chan bool, 100), reg: prometheus.NewRegistry()}
	h.n = &Notifier{Targets: targets, Clock: h.clk, Rand: func() float64 { return 0.5 }, Metrics: NewMetrics(h.reg),
		MaxAttempts: 4, Timeout: 5 * time.Second, BackoffBase: time.Second, BackoffMax: 10 * time.Second}
	h.n.onWait = func(_ string, d time.Duration) { h.waits <- d }
	h.n.onDone = func(_ string, _ Outcome, ok bool) { h.done <- ok }
	return h
}

func (h *harness) start(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = h.n.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
}

func (h *harness) finished(t *testing.T) bool {
	t.Helper()
	select {
	case ok := <-h.done:
		return ok
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery finished")
		return false
	}
}

func (h *harness) wait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-h.waits:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no backoff wait started")
		return 0
	}
}

func (h *harness) count(metric *prometheus.CounterVec, target string) float64 {
	return testutil.ToFloat64(metric.WithLabelValues(target))
}

func token(s string) func() (string, error) { return func() (string, error) { return s, nil } }

var halted = map[string]reconciler.AppFailure{"web": {Revision: sha, Count: 1, Retry: reconciler.Stalled,
	Reason: "web-0: replace-container: container unhealthy: " + strings.Repeat("health check output ", 20)}}

// Each forge gets its documented shape: path, auth header, state word,
// context field, and a description cut to its limit.
func TestCommitStatusShapes(t *testing.T) {
	for _, tc := range []struct {
		forge       Forge
		api, repo   string
		path        string
		authHeader  string
		auth        string
		okState     string
		failState   string
		contextKey  string
		descMaxRune int
	}{
		{GitHub, "", "acme/apps", "/repos/acme/apps/statuses/" + sha, "Authorization", "Bearer tok", "success", "failure", "context", 140},
		{GitLab, "/api/v4", "ops/fleet/apps", "/api/v4/projects/ops%2Ffleet%2Fapps/statuses/" + sha, "Private-Token", "tok", "success", "failed", "name", 255},
		{Gitea, "/api/v1", "acme/apps", "/api/v1/repos/acme/apps/statuses/" + sha, "Authorization", "token tok", "success", "failure", "context", 255},
	} {
		t.Run(string(tc.forge), func(t *testing.T) {
			f := newFakeForge(t)
			cs := &CommitStatus{Forge: tc.forge, API: f.srv.URL + tc.api, Repo: tc.repo, Token: token("tok"), Context: "berth/prod"}
			if err := cs.Check(); err != nil {
				t.Fatal(err)
			}
			h := newHarness(t, cs)
			h.start(t)
			h.n.Notify(report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil))
			h.finished(t)
			h.n.Notify(report(reconciler.RunError, map[string]string{"web": "Stalled"}, halted))
			h.finished(t)
			got := f.requests()
			if len(got) != 2 {
				t.Fatalf("forge got %d requests, want 2", len(got))
			}
			for i, want := range []string{tc.okState, tc.failState} {
				r := got[i]
				if r.Method != "POST" || r.Path != tc.path {
					t.Errorf("request %d: %s %s, want POST %s", i, r.Method, r.Path, tc.path)
				}
				if v := r.Header.Get(tc.authHeader); v != tc.auth {
					t.Errorf("request %d: %s %q, want %q", i, tc.authHeader, v, tc.auth)
				}
				var body map[string]string
				if err := json.Unmarshal(r.Body, &body); err != nil {
					t.Fatalf("body %s: %v", r.Body, err)
				}
				if body["state"] != want || body[tc.contextKey] != "berth/prod" {
					t.Errorf("request %d: body %v, want state %s and %s berth/prod", i, body, want, tc.contextKey)
				}
				if n := utf8.RuneCountInString(body["description"]); n > tc.descMaxRune {
					t.Errorf("description of %d characters, over %s's %d", n, tc.forge, tc.descMaxRune)
				}
			}
			var failed map[string]string
			_ = json.Unmarshal(got[1].Body, &failed)
			if !strings.HasPrefix(failed["description"], "0 of 1 apps converged at 0123456789ab; web Stalled: web-0: replace-container: container unhealthy") {
				t.Errorf("failure description: %q", failed["description"])
			}
			if h.count(h.n.Metrics.deliveries, string(tc.forge)) != 2 {
				t.Errorf("deliveries metric: %v", h.count(h.n.Metrics.deliveries, string(tc.forge)))
			}
		})
	}
}

// A receiver verifies the signature with nothing but the shared secret;
// the signature covers the time and the delivery id, so a request
// replayed later, or with another id, is refused.
func TestWebhookIsSignedAndComplete(t *testing.T) {
	f := newFakeForge(t, http.StatusNoContent)
	wh := &Webhook{URL: f.srv.URL + "/hook", Secret: func() ([]byte, error) { return []byte("s3cret"), nil }, Now: func() time.Time { return t0 }}
	h := newHarness(t, wh)
	h.start(t)
	h.n.Notify(report(reconciler.RunError, map[string]string{"web": "Stalled", "api": "Healthy"}, halted))
	if !h.finished(t) {
		t.Fatal("not delivered")
	}
	r := f.requests()[0]
	sig, id := r.Header.Get(SignatureHeader), r.Header.Get(DeliveryHeader)
	// What the README's recipes compute, by hand.
	ts := strconv.FormatInt(t0.Unix(), 10)
	mac := hmac.New(sha256.New, []byte("s3cret"))
	mac.Write([]byte(ts + "." + id + "."))
	mac.Write(r.Body)
	if want := "t=" + ts + ",sha256=" + hex.EncodeToString(mac.Sum(nil)); sig != want {
		t.Errorf("signature %q, want %q", sig, want)
	}
	if err := Verify([]byte("s3cret"), r.Body, id, sig, t0.Add(time.Minute), DefaultMaxAge); err != nil {
		t.Errorf("signature %q does not verify: %v", sig, err)
	}
	for name, err := range map[string]error{
		"a wrong secret":      Verify([]byte("wrong"), r.Body, id, sig, t0, DefaultMaxAge),
		"a changed body":      Verify([]byte("s3cret"), append(r.Body, ' '), id, sig, t0, DefaultMaxAge),
		"another delivery id": Verify([]byte("s3cret"), r.Body, strings.Repeat("0", 32), sig, t0, DefaultMaxAge),
		"a replay 6m later":   Verify([]byte("s3cret"), r.Body, id, sig, t0.Add(6*time.Minute), DefaultMaxAge),
		"a forged time":       Verify([]byte("s3cret"), r.Body, id, strings.Replace(sig, "t="+ts, "t="+strconv.FormatInt(t0.Unix()+360, 10), 1), t0.Add(6*time.Minute), DefaultMaxAge),
		"the body-only form":  Verify([]byte("s3cret"), r.Body, id, sig[strings.Index(sig, ",")+1:], t0, DefaultMaxAge),
	} {
		if err == nil {
			t.Errorf("%s verifies", name)
		}
	}
	if r.Header.Get(EventHeader) != "run" || len(r.Header.Get(DeliveryHeader)) != 32 {
		t.Errorf("headers: %v", r.Header)
	}
	var p Payload
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Version != 1 || p.Revision != sha || p.Result != "error" || p.State != Failure || p.Subject != "web: hello:2" ||
		!p.Started.Equal(t0) || !p.Finished.Equal(t0.Add(time.Minute)) || len(p.Apps) != 2 {
		t.Fatalf("payload: %+v", p)
	}
	if a := p.Apps[1]; a.Name != "web" || a.Status != "Stalled" || a.Reason != halted["web"].Reason || a.Desired != 2 || a.Ready != 1 {
		t.Errorf("web in the payload: %+v", a)
	}
}

// 5xx and 429 are retried with a growing, jittered backoff (and the
// server's Retry-After); the delivery succeeds on the third attempt.
func TestRetriesOnServerErrors(t *testing.T) {
	f := newFakeForge(t, 503, 429, 201)
	h := newHarness(t, &CommitStatus{Forge: GitHub, API: f.srv.URL, Repo: "a/b", Token: token("t"), Context: "berth"})
	h.start(t)
	h.n.Notify(report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil))
	// Rand 0.5: the wait is 3/4 of the backoff; 1s, then 2s, but the
	// 429's Retry-After (7s) is longer.
	for i, want := range []time.Duration{750 * time.Millisecond, 7 * time.Second} {
		if d := h.wait(t); d != want {
			t.Errorf("wait %d: %s, want %s", i+1, d, want)
		}
		h.clk.Advance(want)
	}
	if !h.finished(t) {
		t.Fatal("not delivered after retries")
	}
	if n := len(f.requests()); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if h.count(h.n.Metrics.failures, "github") != 0 || h.count(h.n.Metrics.deliveries, "github") != 1 {
		t.Error("metrics after a delivery that needed retries")
	}
}

// A 4xx other than 429 is not retried, and counts as a failure.
func TestNoRetryOnClientErrors(t *testing.T) {
	for _, code := range []int{401, 404, 422} {
		f := newFakeForge(t, code)
		h := newHarness(t, &CommitStatus{Forge: Gitea, API: f.srv.URL, Repo: "a/b", Token: token("t"), Context: "berth"})
		h.start(t)
		h.n.Notify(report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil))
		if h.finished(t) {
			t.Fatalf("%d: delivered", code)
		}
		if n := len(f.requests()); n != 1 {
			t.Errorf("%d: %d attempts, want 1", code, n)
		}
		if got := h.count(h.n.Metrics.failures, "gitea"); got != 1 {
			t.Errorf("%d: berth_notify_failures_total = %v, want 1", code, got)
		}
	}
}

// Attempts are bounded; a request that gets no answer times out (on the
// notifier's clock) and is retried like an error.
func TestGivesUpAfterMaxAttemptsAndTimesOut(t *testing.T) {
	f := newFakeForge(t, 500)
	f.block = true
	h := newHarness(t, &Webhook{URL: f.srv.URL, Secret: func() ([]byte, error) { return []byte("k"), nil }})
	h.start(t)
	h.n.Notify(report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil))
	var waits []time.Duration
	for attempt := 1; attempt <= h.n.MaxAttempts; attempt++ {
		<-f.seen
		h.clk.BlockUntil(1) // the request's timeout timer
		h.clk.Advance(h.n.Timeout)
		if attempt < h.n.MaxAttempts {
			d := h.wait(t)
			waits = append(waits, d)
			h.clk.Advance(d)
		}
	}
	if h.finished(t) {
		t.Fatal("delivered")
	}
	if n := len(f.requests()); n != h.n.MaxAttempts {
		t.Errorf("%d attempts, want %d", n, h.n.MaxAttempts)
	}
	// 1s, 2s, 4s backoffs at 3/4 each; never beyond BackoffMax.
	want := []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 3 * time.Second}
	for i := range want {
		if i >= len(waits) || waits[i] != want[i] {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	}
	if got := h.count(h.n.Metrics.failures, "webhook"); got != 1 {
		t.Errorf("berth_notify_failures_total = %v, want 1", got)
	}
}

func TestBackoffIsCapped(t *testing.T) {
	n := &Notifier{Rand: func() float64 { return 0.999 }, BackoffBase: time.Second, BackoffMax: 10 * time.Second}
	n.init()
	for attempt := 1; attempt < 100; attempt++ {
		if d := n.backoff(attempt); d <= 0 || d > n.BackoffMax {
			t.Fatalf("backoff(%d) = %s", attempt, d)
		}
	}
}

// Notify never blocks: with no worker running, a full queue drops its
// oldest outcome and counts it; the newest are delivered once it runs.
// An outcome that says nothing new is not queued twice.
func TestQueueIsBoundedAndDeduplicated(t *testing.T) {
	f := newFakeForge(t)
	h := newHarness(t, &CommitStatus{Forge: GitHub, API: f.srv.URL, Repo: "a/b", Token: token("t"), Context: "berth"})
	h.n.QueueSize = 2
	revs := []string{"1111111111111111", "2222222222222222", "3333333333333333", "4444444444444444"}
	for _, rev := range revs {
		r := report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil)
		r.Revision = rev
		h.n.Notify(r)
		h.n.Notify(r) // the same again: not queued
	}
	if got := h.count(h.n.Metrics.drops, "github"); got != 2 {
		t.Errorf("berth_notify_dropped_total = %v, want 2", got)
	}
	h.start(t)
	h.finished(t)
	h.finished(t)
	got := f.requests()
	if len(got) != 2 || !strings.Contains(got[0].Path, revs[2]) || !strings.Contains(got[1].Path, revs[3]) {
		t.Errorf("delivered %v, want the two newest", got)
	}
	// A failed delivery may be queued again by a run that says the same.
	f.mu.Lock()
	f.codes = []int{403, 201}
	f.mu.Unlock()
	r := report(reconciler.RunError, map[string]string{"web": "Degraded"}, nil)
	h.n.Notify(r)
	if h.finished(t) {
		t.Fatal("403 delivered")
	}
	h.n.Notify(r)
	if !h.finished(t) {
		t.Error("the same outcome was not sent again after a failed delivery")
	}
}

func TestRepoFromRemote(t *testing.T) {
	for _, tc := range []struct {
		forge  Forge
		remote string
		repo   string
		ok     bool
	}{
		{GitHub, "https://github.com/acme/apps.git", "acme/apps", true},
		{GitHub, "git@github.com:acme/apps.git", "acme/apps", true},
		{GitHub, "ssh://git@github.com/acme/apps", "acme/apps", true},
		{GitHub, "https://ghe.example.org/acme/apps.git", "acme/apps", true},
		{GitHub, "https://github.com/acme/apps/extra", "", false},
		{GitLab, "https://gitlab.com/ops/fleet/apps.git", "ops/fleet/apps", true},
		{GitLab, "git@gitlab.example.org:ops/apps.git", "ops/apps", true},
		{GitLab, "https://gitlab.com/apps.git", "", false},
		{Gitea, "https://git.example.org/acme/apps.git", "acme/apps", true},
		{Gitea, "https://git.example.org/gitea/acme/apps.git", "", false},
		{GitHub, "/srv/git/apps", "", false},
		{GitHub, "file:///srv/git/acme/apps", "", false},
		{GitHub, "./acme:apps", "", false},
		{GitHub, "https://github.com/acme/../apps", "", false},
	} {
		repo, ok := RepoFromRemote(tc.forge, tc.remote)
		if repo != tc.repo || ok != tc.ok {
			t.Errorf("RepoFromRemote(%s, %q) = %q %v, want %q %v", tc.forge, tc.remote, repo, ok, tc.repo, tc.ok)
		}
	}
	for _, tc := range []struct {
		forge  Forge
		remote string
		api    string
		ok     bool
	}{
		{GitHub, "https://github.com/acme/apps.git", "https://api.github.com", true},
		{GitHub, "/srv/git/apps", "https://api.github.com", true},
		{GitHub, "git@ghe.example.org:acme/apps.git", "", false},
		{GitLab, "https://gitlab.com/ops/apps.git", "https://gitlab.com/api/v4", true},
		{GitLab, "https://gitlab.example.org/ops/apps.git", "", false},
		{Gitea, "/srv/git/apps", "", false},
	} {
		if api, ok := DefaultAPIFor(tc.forge, tc.remote); api != tc.api || ok != tc.ok {
			t.Errorf("DefaultAPIFor(%s, %q) = %q %v, want %q %v", tc.forge, tc.remote, api, ok, tc.api, tc.ok)
		}
	}
}

func TestCheckRefusesBadConfig(t *testing.T) {
	for _, cs := range []CommitStatus{
		{Forge: "bitbucket", API: "https://x", Repo: "a/b"},
		{Forge: GitHub, API: "ftp://x", Repo: "a/b"},
		{Forge: GitHub, API: "https://x", Repo: "a"},
		{Forge: Gitea, API: "https://x", Repo: "a/b/c"},
		{Forge: GitLab, API: "https://x", Repo: "/"},
	} {
		if err := cs.Check(); err == nil {
			t.Errorf("%+v: no error", cs)
		}
	}
}

// GitLab refuses "running" over "running": a pending outcome with a new
// description is not posted again there; GitHub shows the new one.
func TestPendingKeyOnGitLab(t *testing.T) {
	a := Outcome{Revision: sha, State: Pending, Description: "0 of 2 apps ready"}
	b := Outcome{Revision: sha, State: Pending, Description: "1 of 2 apps ready"}
	gl, gh := &CommitStatus{Forge: GitLab}, &CommitStatus{Forge: GitHub}
	if gl.Key(a) != gl.Key(b) || gh.Key(a) == gh.Key(b) {
		t.Error("pending keys")
	}
	if f := (Outcome{Revision: sha, State: Failure, Description: "x"}); gl.Key(a) == gl.Key(f) {
		t.Error("a failure after pending is not posted on GitLab")
	}
}

// A forge's token never follows a redirect to another host: GitLab's
// PRIVATE-TOKEN is a header Go's client would forward there. The
// delivery fails at once (the same redirect would come again).
func TestRedirectToAnotherHostIsRefused(t *testing.T) {
	other := newFakeForge(t, http.StatusCreated)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// localhost and 127.0.0.1 are other hosts to the client.
		http.Redirect(w, r, strings.Replace(other.srv.URL, "127.0.0.1", "localhost", 1)+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	cs := &CommitStatus{Forge: GitLab, API: redirector.URL + "/api/v4", Repo: "acme/apps", Context: "berth",
		Token: func() (string, error) { return "glpat-secret", nil }}
	h := newHarness(t, cs)
	h.start(t)
	h.n.Notify(report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil))
	if h.finished(t) {
		t.Fatal("delivered through a redirect to another host")
	}
	for _, r := range other.requests() {
		t.Errorf("the other host got %s %s with PRIVATE-TOKEN %q", r.Method, r.Path, r.Header.Get("PRIVATE-TOKEN"))
	}
	if n := h.count(h.n.Metrics.failures, "gitlab"); n != 1 {
		t.Errorf("failures metric %v, want 1 (no retries)", n)
	}
}

// A redirect on the same host (a renamed repository) is followed.
func TestRedirectOnTheSameHostIsFollowed(t *testing.T) {
	var mu sync.Mutex
	var tokens []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/old"); ok {
			http.Redirect(w, r, rest, http.StatusTemporaryRedirect)
			return
		}
		mu.Lock()
		tokens = append(tokens, r.Header.Get("PRIVATE-TOKEN"))
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	cs := &CommitStatus{Forge: GitLab, API: srv.URL + "/old/api/v4", Repo: "acme/apps", Context: "berth",
		Token: func() (string, error) { return "glpat-secret", nil }}
	h := newHarness(t, cs)
	h.start(t)
	h.n.Notify(report(reconciler.RunOK, map[string]string{"web": "Healthy"}, nil))
	if !h.finished(t) {
		t.Fatal("not delivered through a same-host redirect")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tokens) != 1 || tokens[0] != "glpat-secret" {
		t.Errorf("tokens at the new path: %q", tokens)
	}
}

func TestCleartext(t *testing.T) {
	for raw, want := range map[string]bool{
		"http://127.0.0.1:8080/hook":  false,
		"http://localhost/hook":       false,
		"http://[::1]:9/hook":         false,
		"https://hooks.example/x":     false,
		"http://hooks.example/x":      true,
		"http://10.213.87.5:3000/api": true,
	} {
		if got := cleartext(raw); got != want {
			t.Errorf("cleartext(%q) = %v, want %v", raw, got, want)
		}
	}
}
