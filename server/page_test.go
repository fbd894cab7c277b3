package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/net/html"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

// Values a hostile spec, commit or error could carry into the page.
const (
	hostileScript = `<script>alert(1)</script>`
	hostileAttr   = `"><img src=x onerror=alert(2)>`
	hostileBoth   = hostileScript + " " + hostileAttr + " '><svg onload=alert(3)>"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// statusBox is a daemon status a test can change under a live page.
type statusBox struct {
	mu sync.Mutex
	st reconciler.LoopStatus
}

func (b *statusBox) get() reconciler.LoopStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

func (b *statusBox) set(st reconciler.LoopStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st = st
}

// fleetStatus is the status of "web" with two replicas, web-1 not ready,
// every free text field carrying text.
func fleetStatus(rev, subject, text string) reconciler.LoopStatus {
	return reconciler.LoopStatus{
		Status: plan.Status{Revision: rev, Owner: "berth", Apps: []plan.AppStatusView{{
			App: "web", Desired: 2, Ready: 1, Sync: plan.SyncOutOfSync, Health: plan.HealthDegraded,
			Drift:     []string{"web-1 replace-container (container.image) " + text},
			LastError: "web-1: " + text,
			Replicas: []plan.ReplicaView{
				{Instance: "web-0", Slot: 0, Status: "Running", Revision: rev, Container: "running", Health: "healthy",
					Image: "127.0.0.1:5000/berth/hello:1", Ready: true, Address: "10.0.0.10"},
				{Instance: "web-1", Slot: 1, Status: "Running", Revision: rev, Container: "running", Health: "unhealthy",
					Image: text, Error: text, Address: "10.0.0.11"},
			},
			RetainedVolumes: []plan.VolumeView{{Name: "web-data-2", Volume: "data", Slot: 2, Pool: "default", Size: "1GiB", Bytes: 1 << 30, Member: text}},
		}}, Conflicts: []plan.Conflict{{Instance: "web-9", App: "web", Owner: text, Message: text}}},
		Phase: "Idle", LastRun: t0, LastResult: reconciler.RunError, LastError: "lxd: " + text,
		Subject: subject, LastGood: map[string]string{"web": rev}, LeaseHolder: text,
		Failures: map[string]reconciler.AppFailure{"web": {Revision: "f00d", Count: 2, Retry: reconciler.Retrying,
			RetryAfter: t0.Add(time.Minute), Reason: text}},
		Diagnostics:   []string{"apps/" + text + ".yaml:1:1: container.image: " + text},
		SourceWarning: text,
	}
}

func newPageFixture(t *testing.T, box *statusBox, basicAuth, token string) (*Server, *Page) {
	t.Helper()
	p := NewPage(PageConfig{Status: box.get, Now: func() time.Time { return t0.Add(30 * time.Second) }})
	cfg := Config{Listen: "127.0.0.1:0", Page: p}
	if basicAuth != "" {
		cfg.BasicAuthFile = writeFile(t, "users", basicAuth)
	}
	if token != "" {
		cfg.SyncTokenFile = writeFile(t, "token", token)
	}
	s, err := New(cfg, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

func get(t *testing.T, h http.Handler, path string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// elements parses a page and returns its elements by tag name.
func elements(t *testing.T, body string) map[string][]*html.Node {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*html.Node{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			out[n.Data] = append(out[n.Data], n)
			for _, a := range n.Attr {
				if strings.HasPrefix(a.Key, "on") {
					t.Errorf("element <%s> has an event handler attribute %s=%q", n.Data, a.Key, a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func TestPageShowsAppsReplicasAndDaemon(t *testing.T) {
	box := &statusBox{st: fleetStatus("c0ffee1234567890", "web: two replicas", "plain")}
	s, p := newPageFixture(t, box, "", "")
	p.Run(reconciler.RunReport{Revision: "c0ffee1234567890", Subject: "web: two replicas", Author: "Ada", Finished: t0})
	p.View(reconciler.View{Observed: plan.Observed{
		Instances: []plan.Instance{{Name: "web-0", Location: "member-b", BaseImage: "feedbeef"}},
		Images:    []plan.Image{{Fingerprint: "feedbeef", Created: t0.Add(-72 * time.Hour)}},
		At:        t0,
	}})
	rec := get(t, s.handler, "/", nil)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	body := rec.Body.String()
	for _, want := range []string{
		"<h1>Apps</h1>", `<main id="content"`, `data-app="web"`, "Held", // a failure in memory holds the app
		"c0ffee123456", "web: two replicas", "by Ada", "web-0", "web-1", "10.0.0.11", "member-b", "3d old",
		"127.0.0.1:5000/berth/hello:1", "web-1 replace-container (container.image)", "Retrying", "Spec problems",
		"Daemon", "lxd: plain", `http-equiv="refresh"`,
		"<h3>Retained volumes</h3>", "<code>web-data-2</code> (data of slot 2), 1GiB, pool <code>default</code>, on plain", "starts again when the daemon restarts",
	} {
		if want == "Retrying" {
			want = "Tried again after 2026-12-02 10:01:00 UTC"
		}
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	els := elements(t, body)
	if len(els["main"]) != 1 || len(els["header"]) != 1 || len(els["h1"]) != 1 {
		t.Errorf("landmarks: main %d header %d h1 %d", len(els["main"]), len(els["header"]), len(els["h1"]))
	}
	for _, th := range els["th"] {
		if attr(th, "scope") == "" {
			t.Errorf("table header without scope")
		}
	}
	for path, ctype := range map[string]string{"/ui/style.css": "text/css", "/ui/live.js": "text/javascript"} {
		if rec := get(t, s.handler, path, nil); rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %s", path, rec.Code, rec.Header().Get("Content-Type"))
		}
	}
	if rec := get(t, s.handler, "/ui/page.html", nil); rec.Code != http.StatusNotFound {
		t.Errorf("the template is served: %d", rec.Code)
	}
	head := httptest.NewRecorder()
	s.handler.ServeHTTP(head, httptest.NewRequest("HEAD", "/api/v1/events", nil))
	if head.Code != http.StatusOK || head.Body.Len() != 0 {
		t.Errorf("HEAD /api/v1/events: %d, %d bytes", head.Code, head.Body.Len())
	}
	if rec := get(t, s.handler, "/nothing", nil); rec.Code != http.StatusNotFound {
		t.Errorf("GET /nothing: %d", rec.Code)
	}
}

// Every value the page shows comes from specs, commits, LXD or Docker:
// none can add an element or an attribute (issue 14).
func TestPageEscapesHostileValues(t *testing.T) {
	box := &statusBox{st: fleetStatus("c0ffee", hostileBoth, hostileBoth)}
	s, p := newPageFixture(t, box, "", "")
	p.Run(reconciler.RunReport{Revision: "c0ffee", Subject: hostileBoth, Author: hostileBoth, Error: hostileBoth, Finished: t0})
	p.Event(reconciler.Event{Step: plan.Step{App: "web", Instance: "web-1", Action: plan.ReplaceContainer,
		Reasons: []plan.Reason{{Field: "container.image", Old: hostileBoth, New: hostileBoth}}}, Phase: reconciler.PhaseStart})
	p.Event(reconciler.Event{Step: plan.Step{App: "web", Instance: "web-1", Action: plan.ReplaceContainer},
		Phase: reconciler.PhaseFailed, Err: errors.New(hostileBoth)})
	body := get(t, s.handler, "/", nil).Body.String()
	for _, raw := range []string{hostileScript, `<img`, `<svg`} {
		if strings.Contains(body, raw) {
			t.Errorf("page contains %q unescaped", raw)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the hostile value is not shown as text")
	}
	els := elements(t, body)
	if len(els["img"]) != 0 || len(els["svg"]) != 0 || len(els["script"]) != 1 || attr(els["script"][0], "src") != "ui/live.js" {
		t.Errorf("elements injected: img %d svg %d script %d", len(els["img"]), len(els["svg"]), len(els["script"]))
	}
	// The events carry the same escaped content.
	html, _, err := p.mainHTML()
	if err != nil || strings.Contains(html, hostileScript) || strings.Contains(html, "<img") {
		t.Errorf("event content unescaped (%v)", err)
	}
}

// A run in progress lists the planned steps before they start, then each
// as it runs and ends; the end of the run moves it to each app's history.
func TestPageRunInProgressAndHistory(t *testing.T) {
	app := plantest.App("web", 2, 1, "reg/hello:2")
	old := plantest.App("web", 2, 1, "reg/hello:1")
	box := &statusBox{st: fleetStatus("r2", "web: hello 2", "x")}
	box.st.Failures = nil
	s, p := newPageFixture(t, box, "", "")
	p.View(reconciler.View{Desired: plan.Desired{Revision: "r2", Apps: []spec.App{app}}, Observed: plantest.Converged(old)})
	if body := get(t, s.handler, "/", nil).Body.String(); strings.Contains(body, "Run in progress") {
		t.Fatal("a run is shown before any step started")
	}
	step := func(slot int) plan.Step {
		return plan.Step{App: "web", Slot: slot, Instance: []string{"web-0", "web-1"}[slot], Action: plan.ReplaceContainer}
	}
	p.Event(reconciler.Event{Step: step(0), Phase: reconciler.PhaseStart})
	body := get(t, s.handler, "/", nil).Body.String()
	for _, want := range []string{"Run in progress", `data-instance="web-0" data-state="running"`, `data-instance="web-1" data-state="pending"`, "0 of 2 steps finished"} {
		if !strings.Contains(body, want) {
			t.Errorf("run in progress lacks %q", want)
		}
	}
	p.Event(reconciler.Event{Step: step(0), Phase: reconciler.PhaseDone, Duration: 3 * time.Second})
	p.Event(reconciler.Event{Step: step(1), Phase: reconciler.PhaseStart})
	p.Event(reconciler.Event{Step: step(1), Phase: reconciler.PhaseFailed, Duration: time.Second, Err: errors.New("never healthy")})
	p.Run(reconciler.RunReport{Revision: "r2", Subject: "web: hello 2", Author: "Ada", Started: t0, Finished: t0.Add(5 * time.Second),
		Result: reconciler.RunError, Apps: map[string]string{"web": plan.HealthDegraded}})
	body = get(t, s.handler, "/", nil).Body.String()
	if strings.Contains(body, "Run in progress") {
		t.Error("the run is still in progress after it ended")
	}
	for _, want := range []string{"Rollouts", ">failed<", "web-1 replace-container: never healthy", "Degraded, 2 step(s)"} {
		if !strings.Contains(body, want) {
			t.Errorf("history lacks %q", want)
		}
	}
	// The history is bounded.
	for range DefaultHistory + 5 {
		p.Event(reconciler.Event{Step: step(0), Phase: reconciler.PhaseStart})
		p.Event(reconciler.Event{Step: step(0), Phase: reconciler.PhaseDone})
		p.Run(reconciler.RunReport{Revision: "r3", Apps: map[string]string{"web": plan.HealthHealthy}})
	}
	if n := len(p.snapshot().history["web"]); n != DefaultHistory {
		t.Errorf("history holds %d rollouts, want %d", n, DefaultHistory)
	}
	// An app gone from Git and LXD loses its history.
	p.Run(reconciler.RunReport{Revision: "r4", Apps: map[string]string{"api": plan.HealthHealthy}})
	if _, ok := p.snapshot().history["web"]; ok {
		t.Error("history of a removed app kept")
	}
}

func TestPageShowsEndpointsAndDNSName(t *testing.T) {
	box := &statusBox{st: fleetStatus("r1", "s", "x")}
	p := NewPage(PageConfig{Status: box.get, DNSZone: "berth.internal", Endpoints: func() (discovery.Endpoints, bool) {
		return discovery.Endpoints{Apps: []discovery.App{{Name: "web", Replicas: []discovery.Replica{
			{Instance: "web-0", Address: "10.0.0.10", Member: "m1", Ports: []discovery.Port{{Name: "http", Port: 8080, Protocol: "tcp"}}},
		}}}}, true
	}})
	s, err := New(Config{Page: p}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := get(t, s.handler, "/", nil).Body.String()
	for _, want := range []string{"web.berth.internal", "10.0.0.10:8080/tcp", "http 8080/tcp (SRV _http._tcp.web.berth.internal)", "m1"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

// readEvent reads one server-sent event: its name and its data lines
// joined.
func readEvent(t *testing.T, r *bufio.Reader) (string, string) {
	t.Helper()
	var name string
	var data []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading events: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && name != "":
			return name, strings.Join(data, "\n")
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: "))
		}
	}
}

func TestEventsStreamChanges(t *testing.T) {
	box := &statusBox{st: fleetStatus("aaaa1111", "first", "x")}
	s, p := newPageFixture(t, box, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	for s.Addr() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + s.Addr().String() + "/api/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("content type %q", ct)
	}
	r := bufio.NewReader(resp.Body)
	name, data := readEvent(t, r)
	if name != "update" || !strings.Contains(data, "aaaa1111") || strings.Contains(data, "<html") {
		t.Fatalf("first event %q: %.200s", name, data)
	}
	// A new revision rolls out: the stream sends the new content.
	box.set(fleetStatus("bbbb2222", "second "+hostileScript+"\n\nevent: forged\ndata: x", "x"))
	p.Run(reconciler.RunReport{Revision: "bbbb2222", Subject: "second"})
	name, data = readEvent(t, r)
	if name != "update" || !strings.Contains(data, "bbbb2222") || strings.Contains(data, hostileScript) {
		t.Fatalf("second event %q: %.300s", name, data)
	}
	// Shutting the server down ends the stream.
	cancel()
	done := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, r); done <- err }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream outlived the server")
	}
	if err := <-errc; err != nil {
		t.Errorf("serve: %v", err)
	}
}

func TestSSEEventFraming(t *testing.T) {
	got := sseEvent("update", "a\r\nevent: forged\rdata: b\n\nc")
	want := "event: update\ndata: a\ndata: event: forged\ndata: data: b\ndata: \ndata: c\n\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestBasicAuthProtectsStateButNotProbes(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("hunter2"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := "# operators\nada:" + strings.Replace(string(hash), "$2a$", "$2y$", 1) + "\n"
	box := &statusBox{st: fleetStatus("r1", "s", "x")}
	s, _ := newPageFixture(t, box, users, "tok-page")
	basic := func(u, pw string) map[string]string {
		req := httptest.NewRequest("GET", "/", nil)
		req.SetBasicAuth(u, pw)
		return map[string]string{"Authorization": req.Header.Get("Authorization")}
	}
	for _, path := range []string{"/", "/ui/live.js", "/api/v1/events", "/api/v1/status", "/metrics"} {
		rec := get(t, s.handler, path, nil)
		if rec.Code != http.StatusUnauthorized || !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("GET %s without credentials: %d %q", path, rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
		for _, bad := range []map[string]string{basic("ada", "wrong"), basic("eve", "hunter2"), {"Authorization": "Bearer nope"}} {
			if rec := get(t, s.handler, path, bad); rec.Code != http.StatusUnauthorized {
				t.Errorf("GET %s with %v: %d", path, bad, rec.Code)
			}
		}
	}
	for _, good := range []map[string]string{basic("ada", "hunter2"), basic("ada", "hunter2"), {"Authorization": "Bearer tok-page"}} {
		for _, path := range []string{"/", "/api/v1/status"} {
			if rec := get(t, s.handler, path, good); rec.Code != http.StatusOK {
				t.Errorf("GET %s with good credentials: %d", path, rec.Code)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if rec := get(t, s.handler, path, nil); rec.Code != http.StatusOK {
			t.Errorf("probe %s: %d", path, rec.Code)
		}
	}
}

func TestBasicAuthFileRefusesPlainPasswords(t *testing.T) {
	for name, content := range map[string]string{
		"plain":     "ada:hunter2\n",
		"sha1":      "ada:{SHA}f3bbbd66a63d4bf1747940578ec3d0103530e21d\n",
		"no user":   ":$2y$10$abcdefghijklmnopqrstuuN0ZFzVYVTVmtTNkmN7R3zjbL5/EBNm\n",
		"no colon":  "ada\n",
		"empty":     "# nobody\n",
		"duplicate": "ada:$2a$04$abcdefghijklmnopqrstuu7zJ5C2wNwU1eU0XGQ9kQvbM7gN0Hb6a\nada:$2a$04$abcdefghijklmnopqrstuu7zJ5C2wNwU1eU0XGQ9kQvbM7gN0Hb6a\n",
	} {
		_, err := New(Config{Listen: "127.0.0.1:0", BasicAuthFile: writeFile(t, "users", content)}, &fakeBackend{}, nil)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error shows the password: %v", name, err)
		}
	}
}

func TestAppHealthWords(t *testing.T) {
	for _, c := range []struct {
		app  plan.AppStatusView
		fail reconciler.AppFailure
		want string
	}{
		{plan.AppStatusView{Sync: plan.SyncSynced, Health: plan.HealthHealthy}, reconciler.AppFailure{}, "Ready"},
		{plan.AppStatusView{Sync: plan.SyncOutOfSync, Health: plan.HealthProgressing}, reconciler.AppFailure{}, "Progressing"},
		{plan.AppStatusView{Sync: plan.SyncOutOfSync, Health: plan.HealthMissing}, reconciler.AppFailure{}, "Degraded"},
		{plan.AppStatusView{Sync: plan.SyncHeld, Health: plan.HealthHealthy}, reconciler.AppFailure{}, "Held"},
		{plan.AppStatusView{Sync: plan.SyncSynced, Health: plan.HealthDegraded}, reconciler.AppFailure{Revision: "r", Retry: reconciler.Retrying}, "Held"},
		{plan.AppStatusView{Sync: plan.SyncSynced, Health: plan.HealthHealthy}, reconciler.AppFailure{Revision: "r", Retry: reconciler.Stalled}, "Stalled"},
		{plan.AppStatusView{Sync: plan.SyncOrphaned, Health: plan.HealthHealthy}, reconciler.AppFailure{}, "Orphaned"},
	} {
		if got, _, _ := appHealth(c.app, c.fail); got != c.want {
			t.Errorf("%+v %+v: %s, want %s", c.app, c.fail, got, c.want)
		}
	}
}
