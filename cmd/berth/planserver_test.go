package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/server"
	"github.com/berth-gitops/berth/spec"
)

// viewDaemon is a daemon's HTTP server whose loop has observed obs.
type viewDaemon struct {
	obs plan.Observed
	at  time.Time
}

func (v *viewDaemon) Status() any    { return map[string]string{} }
func (v *viewDaemon) Ready() error   { return nil }
func (v *viewDaemon) Trigger(string) {}
func (v *viewDaemon) ObservedView() (any, string, time.Time, bool) {
	return v.obs, "", v.at, !v.at.IsZero()
}

// serveView serves obs as a daemon would, with token as its sync token
// when not empty, and returns its URL.
func serveView(tb testing.TB, obs plan.Observed, token string) string {
	tb.Helper()
	cfg := server.Config{Listen: "127.0.0.1:0"}
	if token != "" {
		cfg.SyncTokenFile = filepath.Join(tb.TempDir(), "token")
		if err := os.WriteFile(cfg.SyncTokenFile, []byte(token+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	srv, err := server.New(cfg, &viewDaemon{obs: normalizeObserved(obs), at: time.Now().Add(-3 * time.Second)}, server.NewMetrics())
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx)
	tb.Cleanup(cancel)
	return "http://" + srv.Addr().String()
}

func TestPlanAgainstADaemonsView(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 3, "reg/web:1"))
	sha := r.commit("web")
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	// Never open: the view holds instance config.
	open := serveView(t, converged(res.Apps, sha), "")
	if code, _, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--server", open); code != 1 || !strings.Contains(errOut, "403") {
		t.Errorf("a daemon without a token: exit %d %s", code, errOut)
	}
	url := serveView(t, converged(res.Apps, sha), "s3cret")
	tok := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tok, []byte("s3cret"), 0o600)
	code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--server", url, "--server-token-file", tok)
	if code != 0 || !strings.Contains(out, "No changes") || !strings.Contains(errOut, "Planned against the state the daemon at "+url+" observed at") {
		t.Fatalf("converged: exit %d\n%s%s", code, out, errOut)
	}
	r.write("apps/web.yaml", appYAML("web", 4, "reg/web:2"))
	r.commit("web: 4 of web:2")
	if code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--server", url, "--server-token-file", tok); code != 2 || !strings.Contains(out, "web-3  create") {
		t.Fatalf("change: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := berth(t, "plan", "--repo", r.dir, "--server", url, "--observed", "x.json"); code != 1 || !strings.Contains(errOut, "give one") {
		t.Errorf("both sources: exit %d %s", code, errOut)
	}

	if code, _, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--server", url); code != 1 || !strings.Contains(errOut, "401") {
		t.Errorf("no token: exit %d %s", code, errOut)
	}
}

// --server-token-file is read with a bound, and the token never follows
// a redirect to another scheme, host or port (issue 18).
func TestPlanServerTokenHandling(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 1, "reg/web:1"))
	r.commit("web")
	url := serveView(t, plan.Observed{}, "s3cret")
	planWith := func(tokenFile string) (int, string) {
		t.Helper()
		code, _, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--server", url, "--server-token-file", tokenFile)
		return code, errOut
	}
	big := writeTemp(t, "big", strings.Repeat("x", 64<<10+1))
	for _, c := range []struct{ file, want string }{
		{"/dev/zero", "--server-token-file /dev/zero: larger than 64 KiB"},
		{big, "--server-token-file " + big + ": larger than 64 KiB"},
		{writeTemp(t, "empty", "\n"), "is empty"},
		{writeTemp(t, "lines", "s3cret\nX-Other: 1\n"), "several lines"},
		{filepath.Join(t.TempDir(), "missing"), "--server-token-file: open "},
	} {
		if code, errOut := planWith(c.file); code != exitError || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, want 1 and %q\n%s", c.file, code, c.want, errOut)
		}
	}

	// A redirect to another port of the same host: refused, the token
	// stays home.
	var leaked atomic.Value
	thief := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		leaked.Store(req.Header.Get("Authorization"))
		w.Write([]byte(`{"at":"2026-01-01T00:00:00Z","observed":{"instances":[]}}`))
	}))
	defer thief.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/api/v1/observed" {
			http.Redirect(w, req, thief.URL+req.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		http.NotFound(w, req)
	}))
	defer redirect.Close()
	tok := writeTemp(t, "tok", "s3cret\n")
	code, _, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--server", redirect.URL, "--server-token-file", tok)
	if code != exitError || !strings.Contains(errOut, "refused a redirect from "+redirect.URL+" to "+thief.URL) || leaked.Load() != nil {
		t.Errorf("redirect to another port: exit %d, token sent: %v\n%s", code, leaked.Load(), errOut)
	}
}

func TestSameServerRedirects(t *testing.T) {
	req := func(raw string) *http.Request {
		r, err := http.NewRequest("GET", raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	from := []*http.Request{req("http://127.0.0.1:9090/api/v1/observed")}
	for to, ok := range map[string]bool{
		"http://127.0.0.1:9090/other":     true,
		"http://127.0.0.1:9091/":          false,
		"https://127.0.0.1:9090/":         false,
		"http://localhost:9090/":          false,
		"http://127.0.0.1/":               false,
		"http://evil.example:9090/":       false,
		"http://127.0.0.1:9090/a?b=c#d":   true,
		"HTTP://127.0.0.1:9090/uppercase": true,
	} {
		if err := sameServer(req(to), from); (err == nil) != ok {
			t.Errorf("redirect to %s: %v, want allowed %v", to, err, ok)
		}
	}
	if err := sameServer(req("http://h/x"), []*http.Request{req("http://h:80/")}); err != nil {
		t.Errorf("the default port is the same port: %v", err)
	}
}

// BenchmarkPlanThroughDaemon300 is a no-op `berth plan --server` of 300
// replicas: Git, the spec load, one HTTP request and the plan.
func BenchmarkPlanThroughDaemon300(b *testing.B) {
	rr := newRepo(b)
	rr.write("apps/web.yaml", appYAML("web", 300, "reg/web:1"))
	sha := rr.commit("web")
	res, err := spec.LoadDir(b.Context(), filepath.Join(rr.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		b.Fatal(err, res.Diagnostics)
	}
	url := serveView(b, converged(res.Apps, sha), "t0ken")
	tok := filepath.Join(b.TempDir(), "tok")
	if err := os.WriteFile(tok, []byte("t0ken"), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if code, out, errOut := runCLI("plan", "--repo", rr.dir, "--dir", "apps", "--server", url, "--server-token-file", tok); code != 0 {
			b.Fatalf("exit %d\n%s%s", code, out, errOut)
		}
	}
}

// TestApplyAgainstAStaleDaemonView: apply --server plans first against a
// daemon's view, and still observes afresh before it writes: a view that
// no longer holds (here: it never saw the replica) is planned again, and
// nothing is created twice.
func TestApplyAgainstAStaleDaemonView(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/db.yaml", systemOnlySpec("db", 1, ""))
	r.commit("db")
	url := serveView(t, plan.Observed{}, "t0ken")
	tok := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tok, []byte("t0ken"), 0o600)
	apply := func() string {
		t.Helper()
		code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir, "--dir", "apps", "--server", url, "--server-token-file", tok)
		if code != 0 || !strings.Contains(errOut, "observing afresh before writing") {
			t.Fatalf("apply --server: exit %d\n%s%s", code, out, errOut)
		}
		return out
	}
	apply()
	if out := apply(); !strings.Contains(out, "planned again") || strings.Contains(out, "create  ") && !strings.Contains(out, "No changes") {
		t.Errorf("a stale view was not planned again:\n%s", out)
	}
	insts, err := c.ListInstances(context.Background(), nil)
	if err != nil || len(insts) != 1 || insts[0].Name != "db-0" {
		t.Errorf("instances after two applies from a stale view: %+v %v", insts, err)
	}
}
