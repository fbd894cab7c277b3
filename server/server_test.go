package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testSecret = "s3cret-webhook"
	testToken  = "tok-123"
)

// fakeBackend records triggers and serves a fixed status.
type fakeBackend struct {
	mu       sync.Mutex
	triggers []string
	notReady error
}

func (f *fakeBackend) Status() any {
	return map[string]any{"revision": "abc123", "owner": "berth", "apps": []any{}, "polling": true}
}

func (f *fakeBackend) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.notReady
}

func (f *fakeBackend) Trigger(reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers = append(f.triggers, reason)
}

func (f *fakeBackend) triggered() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.triggers...)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// logBuffer collects everything the server logs, at every level, so tests
// can check no secret leaks into it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type fixture struct {
	srv     *Server
	backend *fakeBackend
	metrics *Metrics
	logs    *logBuffer
}

// newFixture builds a server following "main" with a webhook secret and,
// when withToken, a sync token.
func newFixture(t *testing.T, withToken bool) *fixture {
	t.Helper()
	f := &fixture{backend: &fakeBackend{}, metrics: NewMetrics(), logs: &logBuffer{}}
	cfg := Config{
		Listen:            "127.0.0.1:0",
		Branch:            "main",
		WebhookSecretFile: writeFile(t, "secret", "  "+testSecret+"\n"),
		Logger:            slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if withToken {
		cfg.SyncTokenFile = writeFile(t, "token", testToken+"\n")
	}
	s, err := New(cfg, f.backend, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = s
	return f
}

type response struct {
	code   int
	body   string
	header http.Header
}

func (f *fixture) do(t *testing.T, method, path string, body []byte, header map[string]string) response {
	t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.srv.handler.ServeHTTP(rec, req)
	return response{code: rec.Code, body: rec.Body.String(), header: rec.Header()}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t, false)
	r := f.do(t, "GET", "/healthz", nil, nil)
	if r.code != 200 || strings.TrimSpace(r.body) != "ok" {
		t.Fatalf("healthz = %d %q", r.code, r.body)
	}
}

func TestReadyz(t *testing.T) {
	f := newFixture(t, false)
	f.backend.notReady = errors.New("first sync not done")
	r := f.do(t, "GET", "/readyz", nil, nil)
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "first sync not done") {
		t.Fatalf("not ready: readyz = %d %q", r.code, r.body)
	}
	f.backend.notReady = nil
	r = f.do(t, "GET", "/readyz", nil, nil)
	if r.code != 200 || strings.TrimSpace(r.body) != "ok" {
		t.Fatalf("ready: readyz = %d %q", r.code, r.body)
	}
}

func TestStatusJSON(t *testing.T) {
	f := newFixture(t, false)
	r := f.do(t, "GET", "/api/v1/status", nil, nil)
	if r.code != 200 {
		t.Fatalf("status = %d %q", r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("body is not JSON: %v: %q", err, r.body)
	}
	if got["revision"] != "abc123" || got["polling"] != true {
		t.Errorf("body = %v", got)
	}
}

type unencodable struct{ fakeBackend }

func (*unencodable) Status() any { return map[string]any{"f": func() {}} }

func TestStatusEncodeError(t *testing.T) {
	s, err := New(Config{}, &unencodable{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/status", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status = %d, want 500", rec.Code)
	}
}

func TestSyncWithoutTokenConfigured(t *testing.T) {
	f := newFixture(t, false)
	r := f.do(t, "POST", "/api/v1/sync", nil, nil)
	if r.code != http.StatusAccepted || strings.TrimSpace(r.body) != `{"triggered":true}` {
		t.Fatalf("sync = %d %q", r.code, r.body)
	}
	if got := f.backend.triggered(); len(got) != 1 || got[0] != "api" {
		t.Fatalf("triggers = %q, want [api]", got)
	}
}

func TestSyncToken(t *testing.T) {
	tests := []struct {
		name    string
		auth    string
		want    int
		trigger bool
	}{
		{"right token", "Bearer " + testToken, http.StatusAccepted, true},
		{"scheme is case-insensitive", "bearer " + testToken, http.StatusAccepted, true},
		{"missing", "", http.StatusUnauthorized, false},
		{"wrong token", "Bearer nope", http.StatusUnauthorized, false},
		{"token prefix", "Bearer " + testToken[:3], http.StatusUnauthorized, false},
		{"wrong scheme", "Basic " + testToken, http.StatusUnauthorized, false},
		{"no scheme", testToken, http.StatusUnauthorized, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, true)
			h := map[string]string{}
			if tt.auth != "" {
				h["Authorization"] = tt.auth
			}
			r := f.do(t, "POST", "/api/v1/sync", nil, h)
			if r.code != tt.want {
				t.Fatalf("code = %d, want %d (%q)", r.code, tt.want, r.body)
			}
			if n := len(f.backend.triggered()); (n == 1) != tt.trigger || n > 1 {
				t.Fatalf("triggers = %d, want trigger=%v", n, tt.trigger)
			}
			if tt.want == http.StatusUnauthorized && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
			}
			if strings.Contains(f.logs.String(), testToken) {
				t.Errorf("token in logs:\n%s", f.logs)
			}
		})
	}
}

func TestMethodNotAllowed(t *testing.T) {
	f := newFixture(t, false)
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/sync"},
		{"PUT", "/api/v1/sync"},
		{"POST", "/healthz"},
		{"POST", "/readyz"},
		{"POST", "/api/v1/status"},
		{"DELETE", "/metrics"},
		{"GET", "/hooks/github"},
		{"GET", "/hooks/gitlab"},
		{"GET", "/hooks/gitea"},
	} {
		r := f.do(t, c.method, c.path, nil, nil)
		if r.code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s = %d, want 405", c.method, c.path, r.code)
		}
		if r.header.Get("Allow") == "" {
			t.Errorf("%s %s: no Allow header", c.method, c.path)
		}
	}
	if n := len(f.backend.triggered()); n != 0 {
		t.Errorf("405s triggered %d runs", n)
	}
}

func TestNotFound(t *testing.T) {
	f := newFixture(t, false)
	if r := f.do(t, "GET", "/nope", nil, nil); r.code != http.StatusNotFound {
		t.Errorf("GET /nope = %d", r.code)
	}
}

func TestNewSecretFiles(t *testing.T) {
	b := &fakeBackend{}
	empty := writeFile(t, "empty", " \n\t")
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"empty secret", Config{Branch: "main", WebhookSecretFile: empty}},
		{"missing secret", Config{Branch: "main", WebhookSecretFile: missing}},
		{"empty token", Config{SyncTokenFile: empty}},
		{"missing token", Config{SyncTokenFile: missing}},
		{"webhooks without branch", Config{WebhookSecretFile: writeFile(t, "s", "x")}},
	} {
		if _, err := New(tc.cfg, b, nil); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	if _, err := New(Config{}, nil, nil); err == nil {
		t.Error("nil backend: New succeeded")
	}
}

func TestServeStartsAndStops(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := New(Config{Listen: "127.0.0.1:0"}, &fakeBackend{}, NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != nil {
		t.Fatal("Addr before Listen is not nil")
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + s.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("healthz over TCP = %d %q", resp.StatusCode, body)
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := client.Get("http://" + s.Addr().String() + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Error("second Serve succeeded")
	}
	client.CloseIdleConnections()
	// Connection goroutines wind down asynchronously; give them a moment.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after Serve returned:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServeWithoutListen(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0"}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for s.Addr() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Serve never listened")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

func TestListenError(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0"}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	defer s.ln.Close()
	taken, err := New(Config{Listen: s.Addr().String()}, &fakeBackend{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := taken.Serve(context.Background()); err == nil {
		t.Fatal("Serve on a taken port succeeded")
	}
}

func TestWebhooksDisabled(t *testing.T) {
	b := &fakeBackend{}
	s, err := New(Config{Branch: "main"}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"ref":"refs/heads/main"}`)
	req := httptest.NewRequest("POST", "/hooks/github", bytes.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign(body, testSecret))
	rec := httptest.NewRecorder()
	s.handler.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "disabled") {
		t.Fatalf("disabled webhook = %d %q", rec.Code, rec.Body)
	}
	if len(b.triggered()) != 0 {
		t.Fatal("disabled webhook triggered")
	}
}

// slowBackend holds Status until released, to keep a request in flight.
type slowBackend struct {
	fakeBackend
	entered chan struct{}
	release chan struct{}
}

func (b *slowBackend) Status() any {
	close(b.entered)
	<-b.release
	return map[string]string{"ok": "yes"}
}

// A request in flight when ctx ends is answered before Serve returns.
func TestServeDrainsInFlight(t *testing.T) {
	b := &slowBackend{entered: make(chan struct{}), release: make(chan struct{})}
	s, err := New(Config{Listen: "127.0.0.1:0"}, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	type result struct {
		code int
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := client.Get("http://" + s.Addr().String() + "/api/v1/status")
		if err != nil {
			got <- result{err: err}
			return
		}
		resp.Body.Close()
		got <- result{code: resp.StatusCode}
	}()
	<-b.entered
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	if r := <-got; r.err != nil || r.code != 200 {
		t.Fatalf("in-flight request: %d %v", r.code, r.err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}
