package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/reconciler"
)

// The status page is tested in a real browser: Debian's headless Chromium,
// driven over the DevTools protocol, against a daemon on real LXD.

// requireChromium returns the path of Chromium. Without it the test skips,
// or fails when the test environment is required (CI, BERTH_REQUIRE_LXD):
// testenv/testenv.sh installs it.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	testlxd.SkipUnlessUsable(t, fmt.Errorf("no Chromium for the browser tests (apt-get install chromium)"))
	return ""
}

// browser starts a headless Chromium and returns a tab's context.
func browser(t *testing.T, chrome string, timeout time.Duration) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		chromedp.NoSandbox, // tests run as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), timeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc(); cancelTimeout() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting %s: %v", chrome, err)
	}
	return bctx
}

// artifactPath is where a test keeps a file for people to look at after
// the run: $BERTH_ARTIFACTS, else .artifacts/ at the top of the repository
// (ignored by Git).
func artifactPath(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("BERTH_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func writeArtifact(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// hostileEvil is an app whose spec carries markup: its image is not a
// valid reference, so the value comes back in a spec problem.
const hostileEvil = `apiVersion: berth/v1
kind: App
metadata:
  name: evil
spec:
  replicas: 1
  system:
    image: berth/debian-docker
    profiles: [default, berth-test]
  container:
    image: '"><img src=x onerror=alert(2)><script>alert(1)</script>'
`

// TestStatusPageInBrowser loads the status page of a daemon on real LXD in
// Chromium: the apps and replicas appear; a rollout (hello:1 -> hello:2)
// shows live, its steps included, in the same document with no reload;
// hostile values from a commit subject and a spec render as text. It
// keeps screenshots (desktop and phone) as artifacts; with
// BERTH_SCREENSHOT=PATH it also writes the desktop one there (`make
// screenshot` regenerates docs/status-page.png so).
func TestStatusPageInBrowser(t *testing.T) {
	requireLive(t)
	chrome := requireChromium(t)
	project, _ := e2eProject(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webWithPorts(2, "hello:1"))
	first := r.commit("web: two replicas of hello 1")
	d := startDaemon(t, "--project", project, "--owner", "ui", "run", "--repo", r.dir, "--dir", "apps",
		"--interval", "1h", "--dns-listen", freePort(t))
	d.waitFor("first sync", 3*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 2, first) })

	ctx := browser(t, chrome, 8*time.Minute)
	// A script that got in would most likely call alert: count the
	// dialogs, and dismiss them so the page goes on.
	var dialogs atomic.Int32
	err := chromedp.Listen(ctx, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialogs.Add(1)
			go func() { _, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{}) }()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	revision := `document.querySelector('article[data-app="web"] .app-revision').dataset.revision`
	err = chromedp.Do(ctx,
		chromedp.Navigate(d.url+"/"),
		chromedp.WaitVisible(`article[data-app="web"]`),
		poll(`document.getElementById("live").dataset.state === "on"`, 20*time.Second),
	)
	if err != nil {
		t.Fatalf("loading the page: %v\n%s", err, tail(d.log(), 30))
	}
	shown := eval[string](t, ctx, revision)
	if shown != first {
		t.Fatalf("the page shows revision %q, want %q", shown, first)
	}
	// Keyboard: the first Tab reaches the skip link, with a visible focus
	// ring.
	if err := chromedp.Do(ctx, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	focus := eval[struct {
		Class, Outline string
	}](t, ctx, `({Class: document.activeElement.className, Outline: getComputedStyle(document.activeElement).outlineStyle})`)
	if focus.Class != "skip" || focus.Outline == "none" {
		t.Errorf("first Tab: focus on %q with outline %q, want the skip link with a visible outline", focus.Class, focus.Outline)
	}
	eval[bool](t, ctx, `document.activeElement.blur(); true`) // out of the screenshot
	replicas := eval[[]string](t, ctx, `[...document.querySelectorAll('article[data-app="web"] table.replicas tbody th')].map(e => e.textContent)`)
	if strings.Join(replicas, ",") != "web-0,web-1" {
		t.Errorf("replicas on the page: %q", replicas)
	}

	// Mark this document and watch what the live updates show: the
	// rollout must arrive in it without a reload.
	eval[bool](t, ctx, `
		window.berthSameDocument = true;
		window.berthSeen = {run: false, running: 0, states: []};
		new MutationObserver(() => {
			const run = document.getElementById("run");
			if (!run) return;
			window.berthSeen.run = true;
			const running = run.querySelectorAll('[data-state="running"]').length;
			window.berthSeen.running = Math.max(window.berthSeen.running, running);
			const states = [...run.querySelectorAll("li.step")].map(li => li.dataset.instance + ":" + li.dataset.state).join(" ");
			if (window.berthSeen.states[window.berthSeen.states.length - 1] !== states) window.berthSeen.states.push(states);
		}).observe(document.getElementById("content"), {childList: true, subtree: true});
		true`)
	r.write("apps/web.yaml", webWithPorts(2, "hello:2"))
	second := r.commit("web: hello 2")
	if err := chromedp.Do(ctx, poll(revision+` === "`+second+`"`, 4*time.Minute)); err != nil {
		t.Fatalf("the rollout did not show on the page: %v\n%s", err, tail(d.log(), 40))
	}
	same := eval[bool](t, ctx, `window.berthSameDocument === true`)
	seen := eval[struct {
		Run     bool     `json:"run"`
		Running int      `json:"running"`
		States  []string `json:"states"`
	}](t, ctx, `window.berthSeen`)
	images := eval[[]string](t, ctx, `[...document.querySelectorAll('article[data-app="web"] td.image')].map(e => e.textContent)`)
	if !same {
		t.Error("the page was reloaded: the rollout did not arrive live")
	}
	if !seen.Run || seen.Running == 0 {
		t.Errorf("the run in progress and its running steps never showed: %+v", seen)
	}
	t.Logf("run in progress as the page showed it: %q", seen.States)
	for _, img := range images {
		if !strings.HasSuffix(img, "hello:2") {
			t.Errorf("replica image on the page after the rollout: %q", img)
		}
	}
	history := eval[int](t, ctx, `document.querySelectorAll('article[data-app="web"] table.history tbody tr').length`)
	if history < 2 { // the first run created the replicas, the second rolled them
		t.Errorf("rollout history has %d rows, want 2", history)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	writeArtifact(t, artifactPath(t, "status-page.png"), png)
	if p := os.Getenv("BERTH_SCREENSHOT"); p != "" {
		writeArtifact(t, p, png)
	}

	// A phone: nothing is wider than the screen but the tables, which
	// scroll inside their own box.
	err = chromedp.Do(ctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Sleep(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if eval[bool](t, ctx, `document.documentElement.scrollWidth > window.innerWidth + 1`) {
		t.Error("the page is wider than a phone's screen")
	}
	if png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	}
	writeArtifact(t, artifactPath(t, "status-page-phone.png"), png)

	// Hostile values: a commit subject and a spec with markup.
	r.write("apps/evil.yaml", hostileEvil)
	third := r.commit(`deploy <script>alert(1)</script> "><img src=x onerror=alert(2)>`)
	err = chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), poll(revision+` === "`+third+`"`, 2*time.Minute))
	if err != nil {
		t.Fatalf("the third revision did not show: %v\n%s", err, tail(d.log(), 30))
	}
	injected := eval[struct {
		Img, Svg, Scripts int
		Subject, Problems string
	}](t, ctx, `({
		Img: document.querySelectorAll("img").length,
		Svg: document.querySelectorAll("svg").length,
		Scripts: document.scripts.length,
		Subject: document.querySelector('article[data-app="web"] .app-revision .subject').textContent,
		Problems: (document.querySelector(".problems") || {textContent: ""}).textContent,
	})`)
	if injected.Img != 0 || injected.Svg != 0 || injected.Scripts != 1 {
		t.Errorf("hostile values injected elements: %+v", injected)
	}
	if !strings.Contains(injected.Subject, `<script>alert(1)</script> "><img src=x onerror=alert(2)>`) {
		t.Errorf("the hostile subject is not shown as text: %q", injected.Subject)
	}
	if !strings.Contains(injected.Problems, `<img src=x onerror=alert(2)>`) {
		t.Errorf("the hostile spec value is not shown as text in the spec problems: %q", injected.Problems)
	}
	if n := dialogs.Load(); n != 0 {
		t.Errorf("%d script dialog(s) opened", n)
	}
	if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
		writeArtifact(t, artifactPath(t, "status-page-hostile.png"), png)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, ctx context.Context, expression string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expression))
	if err != nil {
		t.Fatalf("evaluating %.80q: %v", expression, err)
	}
	return v
}

// poll waits until a JavaScript expression is true in the page.
func poll(expression string, timeout time.Duration) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](expression, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond))
}

// TestStatusPageFlags: --ui-basic-auth-file (here through its environment
// variable) protects the page and the status but not the probes; --ui=false
// serves no page.
func TestStatusPageFlags(t *testing.T) {
	requireLive(t)
	project, _ := e2eProject(t)
	r := newRepo(t)
	r.write("apps/README.md", "no apps yet\n")
	r.commit("empty")
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("ada:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_UI_BASIC_AUTH_FILE", users)
	d := startDaemon(t, "--project", project, "--owner", "ui", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h")
	code := func(d *daemon, path, user string) int {
		req, _ := http.NewRequest("GET", d.url+path, nil)
		if user != "" {
			req.SetBasicAuth(user, "pw")
		}
		for range 100 { // the daemon may not listen yet
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				return resp.StatusCode
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("GET %s: no answer\n%s", path, tail(d.log(), 20))
		return 0
	}
	for path, want := range map[string]int{"/": 401, "/api/v1/status": 401, "/healthz": 200} {
		if got := code(d, path, ""); got != want {
			t.Errorf("GET %s without credentials: %d, want %d", path, got, want)
		}
	}
	for _, path := range []string{"/", "/api/v1/status"} {
		if got := code(d, path, "ada"); got != 200 {
			t.Errorf("GET %s as ada: %d", path, got)
		}
	}
	d.stop()

	t.Setenv("BERTH_UI_BASIC_AUTH_FILE", "")
	off := startDaemon(t, "--project", project, "--owner", "ui", "run", "--repo", r.dir, "--dir", "apps", "--interval", "1h", "--ui=false")
	if got := code(off, "/", ""); got != 404 {
		t.Errorf("GET / with --ui=false: %d", got)
	}
	if got := code(off, "/api/v1/status", ""); got != 200 {
		t.Errorf("GET /api/v1/status with --ui=false: %d", got)
	}
}
