package engine

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	cerrdefs "github.com/containerd/errdefs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/spec"
)

func fastOpts() Options {
	return Options{PollInterval: 20 * time.Millisecond, Settle: 50 * time.Millisecond, CallTimeout: 5 * time.Second}
}

func TestNegotiateChecksVersion(t *testing.T) {
	for _, tc := range []struct {
		api, want, err string
	}{
		{api: "1.41", want: "1.41"},
		{api: "1.45", want: "1.45"},
		{api: "1.99", want: "1.51"}, // the client's own maximum
		{api: "1.40", err: "docker API 1.40 is older than the 1.41 berth needs"},
		{api: "", err: "did not report an API version"},
	} {
		t.Run("api="+tc.api, func(t *testing.T) {
			f := newFakeDaemon(t, tc.api)
			m := New(f.dialer(), fastOpts())
			defer m.Close()
			var v string
			c, err := m.conn(context.Background(), "web-0")
			if err == nil {
				v = c.version
			}
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if len(m.clients) != 0 {
					t.Errorf("a client that failed negotiation was cached")
				}
				return
			}
			if err != nil || v != tc.want {
				t.Fatalf("version = %q, %v; want %q", v, err, tc.want)
			}
		})
	}
}

// A failed ping must be an error: the docker client would otherwise go on
// with its default /v1.51 paths, which a 20.10 daemon refuses.
func TestFailedPingIsAnErrorNotAFallback(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	f.dialErr = errors.New("exec: websocket handshake failed")
	m := New(f.dialer(), fastOpts())
	_, err := m.Observe(context.Background(), "web-0")
	if err == nil || !strings.Contains(err.Error(), "websocket handshake failed") || !strings.Contains(err.Error(), "web-0") {
		t.Fatalf("err = %v; want the tunnel error naming the instance", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) != 0 {
		t.Errorf("requests went out after a failed ping: %v", f.requests)
	}
}

func TestObserveReusesConnection(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	f.handle("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("all") != "1" {
			t.Errorf("list without all=1: %s", r.URL.RawQuery)
		}
		writeJSON(w, 200, []container.Summary{
			{ID: "b1", Names: []string{"/web"}, Image: "reg/web:1", State: "running", Status: "Up 3 minutes (healthy)",
				Labels: map[string]string{ownership.LabelApp: "web", ownership.LabelSlot: "0", ownership.LabelContainerHash: "h1", ownership.LabelRevision: "r1"}},
			{ID: "f1", Names: []string{"/sidecar"}, Image: "x", State: "running", Labels: map[string]string{"other": "1"}},
			{ID: "f2", Names: []string{"/adhoc"}, Image: "y", State: "created"},
		})
	})
	f.handle("GET /containers/b1/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, container.InspectResponse{
			ContainerJSONBase: &container.ContainerJSONBase{
				ID: "b1", Name: "/web", RestartCount: 2,
				State: &container.State{Status: "running", Running: true, Health: &container.Health{Status: "healthy"}},
			},
			Config: &container.Config{Image: "reg/web:1", Labels: map[string]string{ownership.LabelApp: "web", ownership.LabelContainerHash: "h1"}},
		})
	})
	m := New(f.dialer(), fastOpts())
	defer m.Close()
	ctx := context.Background()
	var obs Observation
	for range 5 {
		var err error
		if obs, err = m.Observe(ctx, "web-0"); err != nil {
			t.Fatal(err)
		}
	}
	if d := f.dials.Load(); d != 1 || m.Execs() != 1 {
		t.Errorf("5 observes dialled %d times (Execs %d), want 1", d, m.Execs())
	}
	if !slices.Equal(obs.Foreign, []string{"adhoc", "sidecar"}) {
		t.Errorf("foreign = %v", obs.Foreign)
	}
	c, ok := obs.Container("web")
	if !ok || len(obs.Containers) != 1 {
		t.Fatalf("containers = %+v", obs.Containers)
	}
	if c.Name != "web" || c.ID != "b1" || c.State != "running" || c.Health != HealthHealthy || c.RestartCount != 2 || c.Hash() != "h1" || c.Image != "reg/web:1" {
		t.Errorf("container = %+v", c)
	}
	if obs.APIVersion != "1.41" {
		t.Errorf("api = %q", obs.APIVersion)
	}
	// Foreign containers are never inspected.
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		if strings.Contains(r, "f1") || strings.Contains(r, "f2") {
			t.Errorf("foreign container touched: %s", r)
		}
	}
}

func TestNotRunningForgetsClient(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	f.handle("GET /containers/json", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, []container.Summary{}) })
	m := New(f.dialer(), fastOpts())
	defer m.Close()
	ctx := context.Background()
	if _, err := m.Observe(ctx, "web-0"); err != nil {
		t.Fatal(err)
	}
	// The instance stops: idle tunnels die, new dials are refused.
	m.mu.Lock()
	c := m.clients["web-0"]
	m.mu.Unlock()
	c.cli.Close() // drop the idle connection so the next call dials
	f.dialErr = &notRunningError{err: errors.New("lxd: POST /1.0/instances/web-0/exec: 400 Instance is not running")}
	_, err := m.Observe(ctx, "web-0")
	if !errors.Is(err, ErrInstanceNotRunning) {
		t.Fatalf("err = %v, want ErrInstanceNotRunning", err)
	}
	if !strings.Contains(err.Error(), "web-0") || strings.Contains(err.Error(), "Cannot connect to the Docker daemon") {
		t.Errorf("err = %v, want the real cause", err)
	}
	// Dropped inside the failed dial, before Observe returned.
	m.mu.Lock()
	forgotten := m.clients["web-0"] == nil
	m.mu.Unlock()
	if !forgotten {
		t.Error("the client of a stopped instance is still cached")
	}
	// Started again: a fresh client connects.
	f.dialErr = nil
	if _, err := m.Observe(ctx, "web-0"); err != nil {
		t.Fatal(err)
	}
}

// runOnClock runs fn and plays the fake clock for it: whenever fn waits
// (clk has waiters armed timers), the clock jumps to the next one. It
// returns fn's error and the fake time that passed.
func runOnClock(clk *clock.Fake, waiters int, fn func() error) (time.Duration, error) {
	start := clk.Now()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer cancel()
		done <- fn()
	}()
	for clk.BlockUntilContext(ctx, waiters) == nil {
		if d, ok := clk.Next(); ok {
			clk.Advance(d)
		}
	}
	return clk.Since(start), <-done
}

// fakeClockOpts is fastOpts on a fake clock.
func fakeClockOpts() (Options, *clock.Fake) {
	clk := clock.NewFake(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	o := fastOpts()
	o.Clock = clk
	return o, clk
}

func TestWaitDockerTimeout(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	f.dialErr = errors.New("dial-stdio: connection refused")
	opts, clk := fakeClockOpts()
	m := New(f.dialer(), opts)
	// Two timers while it waits: the timeout, and a poll or a retry.
	took, err := runOnClock(clk, 2, func() error { return m.WaitDocker(context.Background(), "web-2", 200*time.Millisecond) })
	if err == nil || !strings.HasPrefix(err.Error(), "docker did not answer in web-2 within 200ms: ") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if took != 200*time.Millisecond {
		t.Errorf("gave up after %s on the clock, want the 200ms timeout", took)
	}
	if f.dials.Load() < 2 {
		t.Errorf("only %d attempts", f.dials.Load())
	}
	if n := clk.Waiters(); n != 0 {
		t.Errorf("%d timers left armed", n)
	}
	// Cancellation ends the wait at once with the context's error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.WaitDocker(ctx, "web-2", time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
	// And it succeeds once the daemon answers, without waiting.
	f.dialErr = nil
	if err := m.WaitDocker(context.Background(), "web-2", time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestLookupAuth(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cfg := fmt.Sprintf(`{
		"auths": {
			"reg.example:5000": {"auth": %q},
			"https://index.docker.io/v1/": {"auth": %q},
			"https://other.example/v2/": {"username": "u2", "password": "p2"},
			"tok.example": {"identitytoken": "idtok"},
			"bad.example": {"auth": "%%%%%%"},
			"empty.example": {}
		},
		"credHelpers": {"helper.example": "ecr-login"}
	}`, b64("alice:s3cret:with:colons"), b64("bob:hub"))
	for _, tc := range []struct {
		host             string
		user, pass, tok  string
		found            bool
		err              string
		mustNotMentionPw bool
	}{
		{host: "reg.example:5000", user: "alice", pass: "s3cret:with:colons", found: true},
		{host: "docker.io", user: "bob", pass: "hub", found: true},
		{host: "other.example", user: "u2", pass: "p2", found: true},
		{host: "tok.example", tok: "idtok", found: true},
		{host: "nothing.example"},
		{host: "bad.example", err: "not base64"},
		{host: "empty.example", err: "no credentials"},
		{host: "helper.example", err: `credential helper "ecr-login"`},
	} {
		ac, found, err := lookupAuth([]byte(cfg), tc.host)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.host, err, tc.err)
			}
			continue
		}
		if err != nil || found != tc.found || ac.Username != tc.user || ac.Password != tc.pass || ac.IdentityToken != tc.tok {
			t.Errorf("%s: got %+v %v %v", tc.host, ac, found, err)
		}
		if found && ac.ServerAddress != tc.host {
			t.Errorf("%s: server address %q", tc.host, ac.ServerAddress)
		}
	}
	if _, _, err := lookupAuth([]byte(`{"auths": "s3cret"`), "x"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("bad json: %v", err)
	}
}

func TestRegistryAuthHeader(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.json")
	auth := base64.StdEncoding.EncodeToString([]byte("alice:pw"))
	if err := os.WriteFile(file, []byte(`{"auths":{"127.0.0.1:5000":{"auth":"`+auth+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := registryAuth(file, "127.0.0.1:5000/berth/hello:1")
	if err != nil {
		t.Fatal(err)
	}
	ac, err := registry.DecodeAuthConfig(h)
	if err != nil || ac.Username != "alice" || ac.Password != "pw" || ac.ServerAddress != "127.0.0.1:5000" {
		t.Errorf("decoded %+v, %v", ac, err)
	}
	if h, err := registryAuth(file, "docker.io/library/busybox"); h != "" || err != nil {
		t.Errorf("other registry: %q %v", h, err)
	}
	if h, err := registryAuth("", "127.0.0.1:5000/x"); h != "" || err != nil {
		t.Errorf("no file: %q %v", h, err)
	}
	if _, err := registryAuth(filepath.Join(dir, "missing.json"), "127.0.0.1:5000/x"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestBuildConfig(t *testing.T) {
	d := Desired{App: "web", Slot: 2, Revision: "abc123", Spec: spec.Container{
		Image:   "reg/web:1",
		Command: []string{"httpd", "-f"},
		Env:     map[string]string{"PORT": "8080", "A": "1"},
		User:    "65534",
		Volumes: []spec.Volume{{Source: "/srv/web", Target: "/data"}, {Source: "/etc/web", Target: "/conf", ReadOnly: true}},
		Healthcheck: &spec.Healthcheck{
			Test: []string{"CMD", "wget", "-qO-", "http://127.0.0.1:8080/"}, Interval: spec.Duration(5 * time.Second),
			Timeout: spec.Duration(2 * time.Second), StartPeriod: spec.Duration(10 * time.Second), Retries: 3,
		},
	}}
	cfg, host, err := buildConfig(d, "reg/web:1")
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{ownership.LabelApp: "web", ownership.LabelSlot: "2", ownership.LabelContainerHash: d.Spec.Hash(), ownership.LabelRevision: "abc123"}
	if fmt.Sprint(cfg.Labels) != fmt.Sprint(wantLabels) {
		t.Errorf("labels = %v", cfg.Labels)
	}
	if !slices.Equal(cfg.Env, []string{"A=1", "PORT=8080"}) || !slices.Equal(cfg.Cmd, []string{"httpd", "-f"}) || cfg.User != "65534" || cfg.Image != "reg/web:1" {
		t.Errorf("config = %+v", cfg)
	}
	hc := cfg.Healthcheck
	if hc == nil || !slices.Equal(hc.Test, d.Spec.Healthcheck.Test) || hc.Interval != 5*time.Second || hc.Timeout != 2*time.Second ||
		hc.StartPeriod != 10*time.Second || hc.Retries != 3 || hc.StartInterval != 0 {
		t.Errorf("healthcheck = %+v", hc)
	}
	if host.NetworkMode != "host" || host.RestartPolicy.Name != container.RestartPolicyUnlessStopped {
		t.Errorf("host config = %+v", host)
	}
	if !slices.Equal(host.Binds, []string{"/srv/web:/data", "/etc/web:/conf:ro"}) {
		t.Errorf("binds = %v", host.Binds)
	}
	if len(host.PortBindings) != 0 || host.Privileged {
		t.Errorf("unexpected host settings: %+v", host)
	}

	// No healthcheck in the spec: the image's applies (nil, not NONE).
	d.Spec.Healthcheck = nil
	d.Spec.Command = nil
	cfg, _, _ = buildConfig(d, "x")
	if cfg.Healthcheck != nil || cfg.Cmd != nil {
		t.Errorf("nil healthcheck/command: %+v %v", cfg.Healthcheck, cfg.Cmd)
	}
	for _, v := range []spec.Volume{{Source: "rel", Target: "/x"}, {Source: "/a:b", Target: "/x"}, {Source: "/a", Target: "/x,y"}} {
		d.Spec.Volumes = []spec.Volume{v}
		if _, _, err := buildConfig(d, "x"); err == nil {
			t.Errorf("volume %+v accepted", v)
		}
	}
}

func TestParseImage(t *testing.T) {
	const dg = "sha256:a8ac087379637690c21a1f3f8815ec7951e433e7ded72c9e18b67cef741aa0b3"
	for _, tc := range []struct{ in, pull, run, digest string }{
		{"busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox:latest", ""},
		{"127.0.0.1:5000/berth/hello:1", "127.0.0.1:5000/berth/hello:1", "127.0.0.1:5000/berth/hello:1", ""},
		{"127.0.0.1:5000/berth/hello@" + dg, "127.0.0.1:5000/berth/hello@" + dg, "127.0.0.1:5000/berth/hello@" + dg, dg},
		{"127.0.0.1:5000/berth/hello:1@" + dg, "127.0.0.1:5000/berth/hello:1", "127.0.0.1:5000/berth/hello@" + dg, dg},
	} {
		r, err := parseImage(tc.in)
		if err != nil || r.pullRef != tc.pull || r.runRef != tc.run || r.digest != tc.digest {
			t.Errorf("%s: got %+v %v", tc.in, r, err)
		}
	}
	if _, err := parseImage("bad ref!"); err == nil {
		t.Error("bad reference accepted")
	}
	r, _ := parseImage("nginx@" + dg)
	if !r.digestOK(image.InspectResponse{RepoDigests: []string{"nginx@" + dg}}) {
		t.Error("familiar RepoDigests not matched")
	}
	if r.digestOK(image.InspectResponse{RepoDigests: []string{"other/nginx@" + dg, "nginx@sha256:" + strings.Repeat("0", 64)}}) {
		t.Error("wrong repo or digest matched")
	}
}

func TestReadPullStream(t *testing.T) {
	ok := `{"status":"Pulling from berth/hello","id":"1"}` + "\n" + `{"status":"Digest: sha256:x"}` + "\n"
	if err := readPullStream(strings.NewReader(ok)); err != nil {
		t.Fatal(err)
	}
	bad := ok + `{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}` + "\n" + `{"status":"more"}`
	if err := readPullStream(strings.NewReader(bad)); err == nil || err.Error() != "manifest unknown" {
		t.Errorf("err = %v", err)
	}
	if err := readPullStream(strings.NewReader(`{"error":"old style"}`)); err == nil || err.Error() != "old style" {
		t.Errorf("err = %v", err)
	}
	if err := readPullStream(strings.NewReader(`{"status":"trunc`)); err == nil {
		t.Error("truncated stream accepted")
	}
}

func TestReadiness(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	started := func(ago time.Duration) string { return now.Add(-ago).Format(time.RFC3339Nano) }
	insp := func(st container.State, restarts int) container.InspectResponse {
		return container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{State: &st, RestartCount: restarts}}
	}
	health := func(status string, streak int, outputs ...string) *container.Health {
		h := &container.Health{Status: status, FailingStreak: streak}
		for _, o := range outputs {
			h.Log = append(h.Log, &container.HealthcheckResult{ExitCode: 1, Output: o})
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		in     container.InspectResponse
		base   int
		want   verdict
		reason string
	}{
		{"healthy", insp(container.State{Status: "running", Health: health("healthy", 0)}, 0), 0, ready, ""},
		{"unhealthy", insp(container.State{Status: "running", Health: health("unhealthy", 3, "old", "wget: can't connect\nconnection refused\n")}, 0), 0, failed, "unhealthy: connection refused"},
		{"unhealthy no output", insp(container.State{Status: "running", Health: &container.Health{Status: "unhealthy", Log: []*container.HealthcheckResult{{ExitCode: 1}}}}, 0), 0, failed, "unhealthy: exit code 1, no output"},
		{"starting", insp(container.State{Status: "running", Health: health("starting", 0)}, 0), 0, waiting, "health still starting"},
		{"starting failing", insp(container.State{Status: "running", Health: health("starting", 2, "boom")}, 0), 0, waiting, "health still starting (2 failed checks, last: boom)"},
		{"no check settled", insp(container.State{Status: "running", StartedAt: started(10 * time.Second)}, 0), 0, ready, ""},
		{"no check settling", insp(container.State{Status: "running", StartedAt: started(time.Second)}, 0), 0, waiting, "running for 1s, settling for 5s"},
		{"old restarts are fine", insp(container.State{Status: "running", StartedAt: started(time.Hour)}, 4), 4, ready, ""},
		{"new restart", insp(container.State{Status: "running", StartedAt: started(10 * time.Second), ExitCode: 2}, 1), 0, failed, "restarting (1 restarts), last exit code 2"},
		{"restarting", insp(container.State{Status: "restarting", ExitCode: 1}, 0), 0, failed, "restarting (0 restarts), last exit code 1"},
		{"exited", insp(container.State{Status: "exited", ExitCode: 127}, 0), 0, failed, "exited with code 127"},
		{"oom", insp(container.State{Status: "exited", ExitCode: 137, OOMKilled: true}, 0), 0, failed, "exited with code 137 (out of memory)"},
		{"start error", insp(container.State{Status: "created", Error: "exec: \"nope\": executable file not found"}, 0), 0, failed, "not started: exec: \"nope\": executable file not found"},
		{"created", insp(container.State{Status: "created"}, 0), 0, waiting, "created, not started"},
		{"paused", insp(container.State{Status: "paused"}, 0), 0, waiting, "paused"},
	} {
		v, r := readiness(tc.in, tc.base, 5*time.Second, now)
		if v != tc.want || r != tc.reason {
			t.Errorf("%s: got %v %q, want %v %q", tc.name, v, r, tc.want, tc.reason)
		}
	}
}

func TestWaitReadyFake(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	state := &container.State{Status: "running", Health: &container.Health{Status: "starting"}}
	f.handle("GET /containers/web/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, container.InspectResponse{
			ContainerJSONBase: &container.ContainerJSONBase{State: state},
			Config:            &container.Config{Labels: map[string]string{ownership.LabelApp: "web"}},
		})
	})
	f.handle("GET /containers/foreign/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, container.InspectResponse{ContainerJSONBase: &container.ContainerJSONBase{State: state}, Config: &container.Config{}})
	})
	opts, clk := fakeClockOpts()
	m := New(f.dialer(), opts)
	defer m.Close()
	ctx := context.Background()
	took, err := runOnClock(clk, 2, func() error { return m.WaitReady(ctx, "web-0", "web", 150*time.Millisecond) })
	var nr *NotReadyError
	if !errors.As(err, &nr) || nr.Instance != "web-0" || nr.Reason != "timed out after 150ms: health still starting" {
		t.Fatalf("err = %v", err)
	}
	if took != 150*time.Millisecond {
		t.Errorf("gave up after %s on the clock", took)
	}
	if err := m.WaitReady(ctx, "web-0", "nope", time.Second); !errors.As(err, &nr) || nr.Reason != "no container" {
		t.Errorf("missing: %v", err)
	}
	if err := m.WaitReady(ctx, "web-0", "foreign", time.Second); !errors.As(err, &nr) || !strings.Contains(nr.Reason, "not berth's") {
		t.Errorf("foreign: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.WaitReady(cctx, "web-0", "web", time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// A Docker error that quotes an env value must not carry it into logs.
func TestEnsureRedactsSecrets(t *testing.T) {
	const secret = "hunter2-very-secret"
	f := newFakeDaemon(t, "1.41")
	f.handle("GET /containers/json", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, []container.Summary{}) })
	f.handle("GET /images/127.0.0.1:5000/berth/hello:1/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, image.InspectResponse{ID: "sha256:1"})
	})
	var created map[string]json.RawMessage
	f.handle("POST /containers/create", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("name") != "web" {
			t.Errorf("name = %q", r.URL.Query().Get("name"))
		}
		_ = json.NewDecoder(r.Body).Decode(&created)
		writeJSON(w, 400, map[string]string{"message": "invalid env TOKEN=" + secret})
	})
	m := New(f.dialer(), fastOpts())
	defer m.Close()
	var events []Event
	err := m.Ensure(context.Background(), "web-0", Desired{App: "web", Spec: spec.Container{
		Image: "127.0.0.1:5000/berth/hello:1", Env: map[string]string{"TOKEN": secret},
	}}, func(e Event) { events = append(events, e) })
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "TOKEN=***") {
		t.Fatalf("err = %v", err)
	}
	var steps []string
	for _, e := range events {
		steps = append(steps, e.Step)
		if e.Err != nil && strings.Contains(e.Err.Error(), secret) {
			t.Errorf("event leaks the secret: %v", e.Err)
		}
	}
	if !slices.Equal(steps, []string{StepPull, StepCreate}) || events[0].Detail != "127.0.0.1:5000/berth/hello:1 (present)" {
		t.Errorf("events = %+v", events)
	}
	if string(created["HostConfig"]) == "" || !strings.Contains(string(created["HostConfig"]), `"NetworkMode":"host"`) {
		t.Errorf("create body HostConfig = %s", created["HostConfig"])
	}
}

func TestEnsureRefusesForeignName(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	f.handle("GET /containers/json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, []container.Summary{{ID: "f", Names: []string{"/web"}, State: "running"}})
	})
	m := New(f.dialer(), fastOpts())
	defer m.Close()
	d := Desired{App: "web", Spec: spec.Container{Image: "127.0.0.1:5000/berth/hello:1"}}
	if err := m.Ensure(context.Background(), "web-0", d, nil); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Ensure: %v", err)
	}
	if err := m.Remove(context.Background(), "web-0", "web"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Remove: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		if r != "GET /containers/json" {
			t.Errorf("unexpected request %s", r)
		}
	}
}

func TestRedact(t *testing.T) {
	env := map[string]string{"A": "abc", "B": "longsecret"}
	if got := redact(errors.New("x longsecret y abc"), env).Error(); got != "x *** y abc" {
		t.Errorf("got %q", got)
	}
	orig := errors.New("nothing here")
	if redact(orig, env) != orig || redact(nil, env) != nil {
		t.Error("clean errors must pass through unchanged")
	}
}

// An apply running when LXD goes away must not spend DockerTimeout and
// then blame Docker: the first failed dial says LXD is not reachable.
func TestWaitForDockerFailsFastWhenLXDIsUnreachable(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	lxdErr := errors.New("LXD not reachable at /var/lib/lxd/unix.socket: dial unix: connect: no such file or directory")
	f.dialErr = &unreachableError{err: lxdErr}
	m := New(f.dialer(), fastOpts())
	err := m.WaitDocker(context.Background(), "web-0", time.Hour)
	if !errors.Is(err, ErrBackendUnreachable) || !strings.Contains(err.Error(), "LXD not reachable at /var/lib/lxd/unix.socket") {
		t.Fatalf("WaitDocker: err = %v", err)
	}
	if n := f.dials.Load(); n != 1 {
		t.Errorf("WaitDocker dialled %d times; want 1 (no retrying while LXD is gone)", n)
	}
	err = m.WaitReady(context.Background(), "web-0", "web", time.Hour)
	if !errors.Is(err, ErrBackendUnreachable) {
		t.Fatalf("WaitReady: err = %v", err)
	}
	if n := f.dials.Load(); n != 2 {
		t.Errorf("WaitReady dialled %d times in all; want 2", n)
	}
}

// Ensure's permanent failures say so, for the reconciler to stall the app
// instead of retrying it: a digest mismatch, a foreign name, a refused spec.
func TestClassifyPermanentFailures(t *testing.T) {
	type permanent interface{ Permanent() bool }
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w in web-0", ErrDigestMismatch), true},
		{fmt.Errorf("%w: web", ErrNameConflict), true},
		{cerrdefs.ErrNotFound.WithMessage("manifest unknown"), true},
		{cerrdefs.ErrInvalidArgument.WithMessage("invalid mount"), true},
		{errors.New("read: connection reset by peer"), false},
		{fmt.Errorf("pull: %w", context.DeadlineExceeded), false},
		{&unreachableError{err: errors.New("LXD not reachable at /x")}, false},
	} {
		var p permanent
		got := errors.As(classify(c.err), &p) && p.Permanent()
		if got != c.want {
			t.Errorf("%v: permanent = %v, want %v", c.err, got, c.want)
		}
	}
	if (&NotReadyError{Reason: "unhealthy: 500"}).Permanent() != true || (&NotReadyError{Reason: "timed out: docker: EOF", Transient: true}).Permanent() {
		t.Error("NotReadyError: the container failing is permanent, a silent tunnel is not")
	}
}

// An instance stopped by hand while a Restart step waits for its Docker
// must not cost the step the whole wait: the first "not running" ends it,
// marked as a state in transition (the reconciler plans again).
func TestWaitDockerEndsWhenTheInstanceIsNotRunning(t *testing.T) {
	f := newFakeDaemon(t, "1.41")
	f.dialErr = &notRunningError{err: errors.New("lxd: POST /1.0/instances/web-0/exec: 400 Instance is not running")}
	m := New(f.dialer(), fastOpts())
	defer m.Close()
	err := m.WaitDocker(context.Background(), "web-0", time.Hour)
	if !errors.Is(err, ErrInstanceNotRunning) || !strings.Contains(err.Error(), "waiting for docker in web-0") {
		t.Fatalf("WaitDocker: err = %v", err)
	}
	var tr interface{ InTransition() bool }
	if !errors.As(err, &tr) || !tr.InTransition() {
		t.Errorf("WaitDocker: err = %v, want one marked in transition", err)
	}
	if n := f.dials.Load(); n != 1 {
		t.Errorf("WaitDocker dialled %d times; want 1 (a stopped instance does not start by itself)", n)
	}
	if err := m.WaitReady(context.Background(), "web-0", "web", time.Hour); !errors.Is(err, ErrInstanceNotRunning) {
		t.Fatalf("WaitReady: err = %v", err)
	}
}
