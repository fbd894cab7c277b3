package lxd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLXD is an LXD look-alike on a unix socket in a temp dir.
type fakeLXD struct {
	t    *testing.T
	mux  *http.ServeMux
	sock string

	mu   sync.Mutex
	reqs []*http.Request // copies with URL and headers
	auth string
	// extensions are the API extensions GET /1.0 lists.
	extensions []string
}

func newFake(t *testing.T) *fakeLXD {
	t.Helper()
	f := &fakeLXD{t: t, mux: http.NewServeMux(), auth: "trusted", extensions: []string{"instance_get_full", "projects"}}
	f.sock = filepath.Join(t.TempDir(), "unix.socket")
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.reqs = append(f.reqs, r.Clone(context.Background()))
		f.mu.Unlock()
		f.mux.ServeHTTP(w, r)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	f.mux.HandleFunc("GET /1.0", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"srv-etag"`)
		f.mu.Lock()
		auth, exts := f.auth, f.extensions
		f.mu.Unlock()
		sync200(w, map[string]any{
			"api_extensions": exts,
			"api_version":    "1.0",
			"auth":           auth,
			"config":         map[string]any{"core.https_address": ""},
			"environment":    map[string]any{"server_version": "5.0.2", "project": r.URL.Query().Get("project")},
		})
	})
	return f
}

func (f *fakeLXD) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

func (f *fakeLXD) connect(t *testing.T, cfg Config) *Client {
	t.Helper()
	cfg.URL = "unix://" + f.sock
	c, err := Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func sync200(w http.ResponseWriter, meta any) {
	writeJSON(w, 200, map[string]any{"type": "sync", "status": "Success", "status_code": 200, "operation": "", "error_code": 0, "error": "", "metadata": meta})
}

func errorResp(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]any{"type": "error", "status": "", "status_code": 0, "operation": "", "error_code": code, "error": msg, "metadata": nil})
}

func opJSON(id string, code int, errMsg string, mayCancel bool, meta any) map[string]any {
	status := map[int]string{103: "Running", 200: "Success", 400: "Failure", 401: "Cancelled"}[code]
	return map[string]any{"id": id, "class": "task", "description": "Testing", "status": status, "status_code": code,
		"metadata": meta, "may_cancel": mayCancel, "err": errMsg, "created_at": time.Now(), "updated_at": time.Now()}
}

func async202(w http.ResponseWriter, op map[string]any) {
	w.Header().Set("Location", "/1.0/operations/"+op["id"].(string))
	writeJSON(w, 202, map[string]any{"type": "async", "status": "Operation created", "status_code": 100,
		"operation": "/1.0/operations/" + op["id"].(string), "error_code": 0, "error": "", "metadata": op})
}

func TestConnectAndServerInfo(t *testing.T) {
	f := newFake(t)
	c := f.connect(t, Config{Project: "p1"})
	if !c.HasExtension("instance_get_full") || c.HasExtension("nope") {
		t.Fatalf("extensions: %v", c.Server().APIExtensions)
	}
	if got := c.Server().Environment.ServerVersion; got != "5.0.2" {
		t.Fatalf("server version %q", got)
	}
	if got := c.Server().Environment.Project; got != "p1" {
		t.Fatalf("GET /1.0 should carry the project, server saw %q", got)
	}
	_, etag, err := c.GetServer(context.Background())
	if err != nil || etag != "srv-etag" {
		t.Fatalf("GetServer etag %q err %v", etag, err)
	}
	if n := c.RequestCounts()["GET"]; n != 2 {
		t.Fatalf("GET count %d, want 2", n)
	}
}

func TestConnectUntrusted(t *testing.T) {
	f := newFake(t)
	f.mu.Lock()
	f.auth = "untrusted"
	f.mu.Unlock()
	_, err := Connect(context.Background(), Config{URL: f.sock})
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("want ErrUntrusted, got %v", err)
	}
}

func TestConnectBadURL(t *testing.T) {
	if _, err := Connect(context.Background(), Config{URL: "http://example.org"}); err == nil {
		t.Fatal("plain http accepted")
	}
}

func TestTypedErrors(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("GET /1.0/instances/missing", func(w http.ResponseWriter, r *http.Request) {
		errorResp(w, 404, "Instance not found")
	})
	f.mux.HandleFunc("POST /1.0/images/aliases", func(w http.ResponseWriter, r *http.Request) {
		errorResp(w, 409, `Alias "x" already exists`)
	})
	f.mux.HandleFunc("GET /1.0/profiles/teapot", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		_, _ = io.WriteString(w, "not json")
	})
	c := f.connect(t, Config{})
	ctx := context.Background()

	_, _, err := c.GetInstance(ctx, "missing")
	var se *StatusError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.Code != 404 || se.Message != "Instance not found" || se.Method != "GET" || se.Path != "/1.0/instances/missing" {
		t.Fatalf("404: %#v", err)
	}
	if errors.Is(err, ErrConflict) {
		t.Fatal("404 matched ErrConflict")
	}
	err = c.CreateImageAlias(ctx, "x", "abc", "")
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("409: %v", err)
	}
	_, _, err = c.GetProfile(ctx, "teapot")
	if !errors.As(err, &se) || se.Code != 500 || !strings.Contains(err.Error(), "not json") {
		t.Fatalf("500: %v", err)
	}
}

func TestETagIfMatch(t *testing.T) {
	f := newFake(t)
	const cur = "abc123"
	f.mux.HandleFunc("GET /1.0/instances/web-0", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("recursion") != "1" {
			t.Errorf("GetInstance should use recursion=1 with instance_get_full: %s", r.URL)
		}
		w.Header().Set("ETag", `"`+cur+`"`)
		sync200(w, map[string]any{"name": "web-0", "status": "Running", "status_code": 103,
			"config": map[string]string{"user.a": "1", "volatile.idmap.base": "0"},
			"state":  map[string]any{"status": "Running", "pid": 42, "network": map[string]any{"eth0": map[string]any{"addresses": []any{map[string]any{"family": "inet", "address": "10.0.0.2"}}}}}})
	})
	f.mux.HandleFunc("PATCH /1.0/instances/web-0", func(w http.ResponseWriter, r *http.Request) {
		if m := r.Header.Get("If-Match"); m != "" && strings.Trim(m, `"`) != cur {
			errorResp(w, 412, "ETag doesn't match: "+cur+" vs "+m)
			return
		}
		var p map[string]any
		_ = json.NewDecoder(r.Body).Decode(&p)
		if p["config"].(map[string]any)["user.a"] != "" {
			t.Errorf("patch body %v", p)
		}
		sync200(w, map[string]any{})
	})
	c := f.connect(t, Config{})
	ctx := context.Background()
	inst, etag, err := c.GetInstance(ctx, "web-0")
	if err != nil {
		t.Fatal(err)
	}
	if etag != cur || !inst.Running() || inst.State == nil || inst.State.Pid != 42 || inst.State.Network["eth0"].Addresses[0].Address != "10.0.0.2" {
		t.Fatalf("instance %+v etag %q", inst, etag)
	}
	if err := c.PatchInstance(ctx, "web-0", InstancePatch{Config: map[string]string{"user.a": ""}}, etag); err != nil {
		t.Fatal(err)
	}
	err = c.PatchInstance(ctx, "web-0", InstancePatch{Config: map[string]string{"user.a": ""}}, "stale")
	if !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("stale etag: %v", err)
	}
	var sawIfMatch []string
	for _, r := range f.requests() {
		if r.Method == "PATCH" {
			sawIfMatch = append(sawIfMatch, r.Header.Get("If-Match"))
		}
	}
	if fmt.Sprint(sawIfMatch) != "[abc123 stale]" {
		t.Fatalf("If-Match headers %v", sawIfMatch)
	}
	w := inst.Writable()
	w.Config["user.b"] = "2"
	if _, ok := inst.Config["user.b"]; ok {
		t.Fatal("Writable shares the config map")
	}
}

func TestOperationWaitLoopAndProject(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	waits := 0
	var createBody map[string]any
	f.mux.HandleFunc("POST /1.0/instances", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&createBody)
		async202(w, opJSON("op1", 103, "", false, nil))
	})
	f.mux.HandleFunc("GET /1.0/operations/op1/wait", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		waits++
		n := waits
		mu.Unlock()
		if r.URL.Query().Get("timeout") == "" {
			t.Errorf("wait without timeout: %s", r.URL)
		}
		if n < 3 {
			// LXD's answer to a wait that timed out: HTTP 200, still running.
			sync200(w, opJSON("op1", 103, "", false, nil))
			return
		}
		sync200(w, opJSON("op1", 200, "", false, nil))
	})
	c := f.connect(t, Config{Project: "blue", Target: "node2"})
	err := c.CreateInstance(context.Background(), InstancesPost{
		Name: "web-0", Source: ImageSource{Alias: "berth/busybox"}, Profiles: []string{},
		Config: map[string]string{"user.berth.owner": "berth"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if waits != 3 {
		t.Fatalf("waits %d, want 3", waits)
	}
	for _, r := range f.requests() {
		q := r.URL.Query()
		switch {
		case strings.HasPrefix(r.URL.Path, "/1.0/operations/"):
			if q.Has("project") || q.Has("target") {
				t.Errorf("operation URL with project/target: %s", r.URL)
			}
		case r.URL.Path == "/1.0/instances":
			if q.Get("project") != "blue" || q.Get("target") != "node2" {
				t.Errorf("create URL %s", r.URL)
			}
		}
	}
	src := createBody["source"].(map[string]any)
	if src["type"] != "image" || src["alias"] != "berth/busybox" || src["mode"] != nil {
		t.Errorf("source %v", src)
	}
	if p, ok := createBody["profiles"].([]any); !ok || len(p) != 0 {
		t.Errorf("explicit empty profiles must be sent as []: %v", createBody["profiles"])
	}
	if createBody["type"] != "container" {
		t.Errorf("type %v", createBody["type"])
	}
}

func TestCreateProfilesOmittedAndRemoteImage(t *testing.T) {
	f := newFake(t)
	var body map[string]any
	f.mux.HandleFunc("POST /1.0/instances", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&body)
		async202(w, opJSON("op2", 200, "", false, nil))
	})
	c := f.connect(t, Config{})
	remote, src := ParseImageRef("images:debian/12")
	if remote != "images" || src.Alias != "debian/12" {
		t.Fatalf("ParseImageRef: %q %+v", remote, src)
	}
	src.Server = "https://images.example.org"
	if err := c.CreateInstance(context.Background(), InstancesPost{Name: "a", Source: src}); err != nil {
		t.Fatal(err)
	}
	if _, ok := body["profiles"]; ok {
		t.Errorf("nil profiles must be omitted: %v", body)
	}
	s := body["source"].(map[string]any)
	if s["mode"] != "pull" || s["protocol"] != "simplestreams" || s["server"] != "https://images.example.org" {
		t.Errorf("remote source %v", s)
	}
	fp := strings.Repeat("ab", 32)
	if _, src := ParseImageRef(fp); src.Fingerprint != fp || src.Alias != "" {
		t.Errorf("fingerprint ref: %+v", src)
	}
}

func TestFailedOperationIsHTTP200(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("POST /1.0/instances", func(w http.ResponseWriter, r *http.Request) {
		async202(w, opJSON("op3", 103, "", false, nil))
	})
	f.mux.HandleFunc("GET /1.0/operations/op3/wait", func(w http.ResponseWriter, r *http.Request) {
		sync200(w, opJSON("op3", 400, `Failed creating instance record: Add instance info to the database: This "instances" entry already exists`, false, nil))
	})
	f.mux.HandleFunc("PUT /1.0/instances/{name}/state", func(w http.ResponseWriter, r *http.Request) {
		async202(w, opJSON("op4", 400, "The instance is already running", false, nil))
	})
	c := f.connect(t, Config{})
	err := c.CreateInstance(context.Background(), InstancesPost{Name: "dup", Source: ImageSource{Alias: "x"}})
	var oe *OperationError
	if !errors.As(err, &oe) || oe.ID != "op3" || oe.StatusCode != 400 || !errors.Is(err, ErrConflict) {
		t.Fatalf("want OperationError matching ErrConflict, got %#v", err)
	}
	if err := c.StartInstance(context.Background(), "web-0"); err != nil {
		t.Fatalf("start of a running instance must be a no-op: %v", err)
	}
	if err := c.SetInstanceState(context.Background(), "web-0", InstanceStatePut{Action: "start"}); err == nil {
		t.Fatal("SetInstanceState hides the failure")
	}
}

func TestListInstancesFilter(t *testing.T) {
	f := newFake(t)
	var rawQuery string
	f.mux.HandleFunc("GET /1.0/instances", func(w http.ResponseWriter, r *http.Request) {
		rawQuery = r.URL.RawQuery
		// LXD's match is case-insensitive: it would return both.
		sync200(w, []map[string]any{
			{"name": "a", "config": map[string]string{"user.berth.owner": "Berth", "user.berth.app": "web"}},
			{"name": "b", "config": map[string]string{"user.berth.owner": "berth", "user.berth.app": "web"}},
		})
	})
	c := f.connect(t, Config{Project: "p"})
	got, err := c.ListInstances(context.Background(), map[string]string{"config.user.berth.owner": "berth", "config.user.berth.app": "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != "b" {
		t.Fatalf("exact re-check failed: %+v", got)
	}
	q, _ := url.ParseQuery(rawQuery)
	want := `config.user.berth.app eq ^web$ and config.user.berth.owner eq ^berth$`
	if q.Get("filter") != want || q.Get("recursion") != "2" || q.Get("project") != "p" {
		t.Fatalf("query %q: filter %q", rawQuery, q.Get("filter"))
	}
	if strings.Contains(rawQuery, " ") {
		t.Fatalf("query not encoded: %q", rawQuery)
	}
	if got := filterValue(`a b."c`); got != `^a\x{20}b\.\x{22}c$` {
		t.Fatalf("filterValue: %s", got)
	}
	if _, err := c.ListInstances(context.Background(), map[string]string{"bad key": "x"}); err == nil {
		t.Fatal("key with space accepted")
	}
	if n := len(f.requests()); n != 2 { // GET /1.0 + one list
		t.Fatalf("requests %d", n)
	}
}

func TestWaitHonoursContextAndCancels(t *testing.T) {
	f := newFake(t)
	deleted := make(chan string, 1)
	f.mux.HandleFunc("PUT /1.0/instances/{name}/state", func(w http.ResponseWriter, r *http.Request) {
		async202(w, opJSON("op5", 103, "", true, nil))
	})
	f.mux.HandleFunc("GET /1.0/operations/op5/wait", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // never finishes on its own
	})
	f.mux.HandleFunc("DELETE /1.0/operations/op5", func(w http.ResponseWriter, r *http.Request) {
		deleted <- r.URL.Path
		sync200(w, nil)
	})
	c := f.connect(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.SetInstanceState(ctx, "x", InstanceStatePut{Action: "stop", Timeout: 30})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline exceeded, got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	select {
	case <-deleted:
	case <-time.After(3 * time.Second):
		t.Fatal("cancellable operation was not cancelled")
	}
	// The wait asked for no more than the deadline allowed.
	for _, r := range f.requests() {
		if strings.HasSuffix(r.URL.Path, "/wait") && r.URL.Query().Get("timeout") != "1" {
			t.Errorf("wait timeout %s", r.URL.Query().Get("timeout"))
		}
	}
}

func TestStopFallsBackToForce(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	var bodies []InstanceStatePut
	f.mux.HandleFunc("PUT /1.0/instances/{name}/state", func(w http.ResponseWriter, r *http.Request) {
		var b InstanceStatePut
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		if !b.Force {
			async202(w, opJSON("op6", 400, "Failed shutting down instance: timed out", false, nil))
			return
		}
		async202(w, opJSON("op7", 200, "", false, nil))
	})
	c := f.connect(t, Config{})
	if err := c.StopInstance(context.Background(), "x", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if len(bodies) != 2 || bodies[0].Timeout != 2 || bodies[0].Force || !bodies[1].Force {
		t.Fatalf("state bodies %+v", bodies)
	}
}

func TestOnRequestHook(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("GET /1.0/profiles/default", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", "p1")
		sync200(w, map[string]any{"name": "default", "config": map[string]string{}})
	})
	c := f.connect(t, Config{})
	var seen []string
	c.OnRequest = func(method, path string) { seen = append(seen, method+" "+path) }
	p, etag, err := c.GetProfile(context.Background(), "default")
	if err != nil || p.Name != "default" || etag != "p1" {
		t.Fatalf("%+v %q %v", p, etag, err)
	}
	if fmt.Sprint(seen) != "[GET /1.0/profiles/default]" {
		t.Fatalf("seen %v", seen)
	}
	if c.RequestCounts()["PUT"] != 0 {
		t.Fatal("writes counted")
	}
}

func TestDefaultSocketPath(t *testing.T) {
	t.Setenv("LXD_SOCKET", "/x/sock")
	if p := DefaultSocketPath(); p != "/x/sock" {
		t.Fatal(p)
	}
	t.Setenv("LXD_SOCKET", "")
	t.Setenv("LXD_DIR", "/y")
	if p := DefaultSocketPath(); p != "/y/unix.socket" {
		t.Fatal(p)
	}
}

// A start that LXD's forkstart failed (its device hook missed LXD's 30 s
// under load) is tried once more; one that fails again says both. At
// most maxStarts starts of one client run at once.
func TestStartRetriesForkstartAndIsBounded(t *testing.T) {
	defer func(d time.Duration) { startRetryPause = d }(startRetryPause)
	startRetryPause = time.Millisecond
	const forkstart = "Failed to run: /usr/bin/lxd forkstart web-0 /var/lib/lxd/containers /var/log/lxd/web-0/lxc.conf: exit status 1"
	f := newFake(t)
	var mu sync.Mutex
	puts, running, most := map[string]int{}, 0, 0
	f.mux.HandleFunc("PUT /1.0/instances/{name}/state", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		mu.Lock()
		puts[name]++
		n := puts[name]
		running++
		most = max(most, running)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		running--
		mu.Unlock()
		switch {
		case name == "broken" || name == "flaky" && n == 1:
			async202(w, opJSON("op-"+name, 400, forkstart, false, nil))
		default:
			async202(w, opJSON("op-"+name, 200, "", false, nil))
		}
	})
	c := f.connect(t, Config{})
	ctx := context.Background()
	if err := c.StartInstance(ctx, "flaky"); err != nil || puts["flaky"] != 2 {
		t.Errorf("flaky: %v after %d PUTs; want a second try that starts it", err, puts["flaky"])
	}
	if err := c.StartInstance(ctx, "broken"); err == nil || !strings.Contains(err.Error(), "tried twice") || puts["broken"] != 2 {
		t.Errorf("broken: %v after %d PUTs; want an error after 2", err, puts["broken"])
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.StartInstance(ctx, fmt.Sprintf("web-%d", i))
		}()
	}
	wg.Wait()
	if most > maxStarts {
		t.Errorf("%d starts ran at once; want at most %d", most, maxStarts)
	}
}

// LXD forgets a finished operation 5 s after it ends; a wait that comes
// later gets a 404. A create or start whose result shows (the instance is
// there, it runs) is then a success, not an error.
func TestOperationGoneIsCheckedAgainstTheResult(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("POST /1.0/instances", func(w http.ResponseWriter, r *http.Request) {
		async202(w, opJSON("gone1", 103, "", false, nil))
	})
	f.mux.HandleFunc("PUT /1.0/instances/{name}/state", func(w http.ResponseWriter, r *http.Request) {
		async202(w, opJSON("gone2", 103, "", false, nil))
	})
	f.mux.HandleFunc("GET /1.0/operations/{id}/wait", func(w http.ResponseWriter, r *http.Request) {
		errorResp(w, 404, "Operation not found")
	})
	f.mux.HandleFunc("GET /1.0/instances/made", func(w http.ResponseWriter, r *http.Request) {
		sync200(w, map[string]any{"name": "made", "status": "Running", "status_code": 103})
	})
	f.mux.HandleFunc("GET /1.0/instances/made/state", func(w http.ResponseWriter, r *http.Request) {
		sync200(w, map[string]any{"status": "Running", "status_code": 103})
	})
	c := f.connect(t, Config{})
	ctx := context.Background()
	if err := c.CreateInstance(ctx, InstancesPost{Name: "made", Source: ImageSource{Alias: "x"}}); err != nil {
		t.Errorf("create whose instance is there: %v", err)
	}
	if err := c.StartInstance(ctx, "made"); err != nil {
		t.Errorf("start of an instance that runs: %v", err)
	}
	err := c.CreateInstance(ctx, InstancesPost{Name: "lost", Source: ImageSource{Alias: "x"}})
	if !errors.Is(err, ErrOperationGone) || !strings.Contains(err.Error(), "forgotten") {
		t.Errorf("create whose instance is not there: %v; want ErrOperationGone", err)
	}
}
