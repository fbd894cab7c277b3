// Package server is the HTTP face of `berth run`: liveness and readiness
// probes, Prometheus metrics, the status as JSON, the endpoints of the
// replicas (as JSON and as Prometheus service discovery), a sync endpoint
// and webhook receivers for GitHub, GitLab and Gitea.
//
// Every way in only asks for a run (Backend.Trigger); runs are
// level-triggered and observe everything, so a request carries no data the
// daemon depends on, and a lost or duplicated trigger is harmless.
//
// Endpoints:
//
//	GET  /                      the status page (Config.Page; see page_http.go for its assets and events)
//	GET  /api/v1/events         server-sent events that keep the status page live
//	GET  /healthz               200 "ok" while the process serves HTTP
//	GET  /readyz                200 "ok" once Backend.Ready is nil, else 503 and the reason
//	GET  /metrics               Prometheus exposition of the Metrics registry
//	GET  /api/v1/status         200 JSON of Backend.Status
//	GET  /api/v1/endpoints      200 JSON of Discovery.Endpoints; 503 before the first observe
//	GET  /api/v1/sd/prometheus  200 JSON of Discovery.PrometheusTargets (http_sd_configs); 503 before the first observe
//	POST /api/v1/sync           202 {"triggered":true}; 401 without the bearer token when one is configured
//	POST /hooks/github          X-Hub-Signature-256 (HMAC-SHA256 of the body)
//	POST /hooks/gitlab          X-Gitlab-Token
//	POST /hooks/gitea           X-Gitea-Signature (or X-Hub-Signature-256)
//
// Webhook requests are authenticated before anything else: a request whose
// signature or token does not match gets 401 and triggers nothing. A push
// to the followed branch answers 202 and triggers a run; pushes to other
// branches, tag pushes and other events answer 200 with the reason they
// were ignored, so the provider's delivery log shows it. Without a webhook
// secret the hook endpoints answer 404.
//
// Security: without a sync token anyone who reaches the listener can ask
// for runs (they cannot change what is applied: that comes from Git). Bind
// to loopback (the default, 127.0.0.1:9090) or configure SyncTokenFile.
// With BasicAuthFile, every route that shows the daemon's state (the page,
// its events, status, endpoints, metrics) needs a user of that file, or
// the sync token as a bearer token; the probes stay open.
package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultListen is the address used when Config.Listen is empty: loopback,
// because the sync endpoint may run without a token.
const DefaultListen = "127.0.0.1:9090"

// shutdownTimeout bounds the graceful shutdown in Serve; requests are short,
// so anything still running after it is stuck.
const shutdownTimeout = 5 * time.Second

// maxBodyBytes bounds webhook bodies. GitHub caps payloads at 25 MB but a
// push of a config repo is a few KiB; berth reads only the ref.
const maxBodyBytes = 1 << 20

// Backend is what the server needs from the daemon.
type Backend interface {
	// Status returns the body of GET /api/v1/status; it is encoded as
	// JSON.
	Status() any
	// Ready returns nil once the daemon can do its job (first sync done,
	// LXD reachable); the error's text is shown by /readyz.
	Ready() error
	// Trigger asks for a run. It must not block: the daemon coalesces
	// requests. reason is "api" or "webhook:<provider>".
	Trigger(reason string)
}

// Config configures a Server.
type Config struct {
	// Listen is the TCP address to listen on; DefaultListen when empty.
	// Port 0 picks a free port (see Addr).
	Listen string
	// Branch is the branch the daemon follows, e.g. "main". Webhook
	// pushes to other branches are acknowledged and ignored. Required
	// when WebhookSecretFile is set.
	Branch string
	// WebhookSecretFile names a file holding the secret shared with the
	// Git host. Empty disables the webhook endpoints (they answer 404).
	WebhookSecretFile string
	// SyncTokenFile names a file holding the bearer token POST
	// /api/v1/sync requires. Empty means no token is needed: then bind
	// Listen to loopback.
	SyncTokenFile string
	// Logger receives request logs (debug), triggers (info) and rejected
	// webhooks (warn). nil discards them.
	Logger *slog.Logger
	// Discovery serves the endpoint routes; nil: they answer 404.
	Discovery Discovery
	// Page is the status page served at "/"; nil: no page.
	Page *Page
	// BasicAuthFile names a file of "user:<bcrypt hash>" lines; when set,
	// the routes that show state need one of its users (or the sync
	// token as a bearer token).
	BasicAuthFile string
}

// Discovery is what the endpoint routes need from service discovery
// (package discovery implements it). Each body is encoded as JSON; ok is
// false while nothing has been observed yet, and the route answers 503 (a
// Prometheus server then keeps the targets it had).
type Discovery interface {
	// Endpoints returns the body of GET /api/v1/endpoints.
	Endpoints() (body any, ok bool)
	// PrometheusTargets returns the body of GET /api/v1/sd/prometheus, a
	// list of target groups.
	PrometheusTargets() (body any, ok bool)
}

// Server serves berth's HTTP endpoints.
type Server struct {
	cfg     Config
	backend Backend
	metrics *Metrics
	log     *slog.Logger
	secret  []byte     // nil: webhooks disabled
	token   []byte     // nil: sync needs no token
	basic   *basicAuth // nil: state is shown without credentials
	handler http.Handler

	mu      sync.Mutex
	ln      net.Listener
	serving bool
}

// New builds a Server. It reads the webhook secret and sync token files
// (surrounding whitespace is trimmed; an empty or unreadable file is an
// error, so a typo cannot silently disable authentication). A nil m gets a
// fresh NewMetrics, so /metrics always answers.
func New(cfg Config, b Backend, m *Metrics) (*Server, error) {
	if b == nil {
		return nil, errors.New("server: nil backend")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if m == nil {
		m = NewMetrics()
	}
	s := &Server{cfg: cfg, backend: b, metrics: m, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if cfg.WebhookSecretFile != "" {
		if cfg.Branch == "" {
			return nil, errors.New("server: webhooks need the branch to follow")
		}
		if s.secret, err = s.readSecret("webhook secret", cfg.WebhookSecretFile); err != nil {
			return nil, err
		}
	}
	if cfg.SyncTokenFile != "" {
		if s.token, err = s.readSecret("sync token", cfg.SyncTokenFile); err != nil {
			return nil, err
		}
	}
	if cfg.BasicAuthFile != "" {
		if s.basic, err = loadBasicAuth(cfg.BasicAuthFile); err != nil {
			return nil, err
		}
		if fi, err := os.Stat(cfg.BasicAuthFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			s.log.Warn("basic-auth file is readable by others", "path", cfg.BasicAuthFile, "mode", fi.Mode().Perm().String())
		}
	}
	s.handler = s.routes()
	return s, nil
}

// readSecret reads a secret from path, trimmed. It warns when others may
// read the file but does not refuse: the operator may have reasons.
func (s *Server) readSecret(what, path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server: reading %s: %w", what, err)
	}
	v := strings.TrimSpace(string(raw))
	if v == "" {
		return nil, fmt.Errorf("server: %s file %s is empty", what, path)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		s.log.Warn("secret file is readable by others", "what", what, "path", path, "mode", fi.Mode().Perm().String())
	}
	return []byte(v), nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	// Method patterns make the mux answer 405 with an Allow header for
	// other methods; GET patterns also serve HEAD.
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.protect(promhttp.HandlerFor(s.metrics.Registry(), promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	})))
	mux.Handle("GET /api/v1/status", s.protect(http.HandlerFunc(s.status)))
	if vb, ok := s.backend.(ViewBackend); ok {
		mux.Handle("GET /api/v1/observed", s.protect(s.observed(vb)))
	}
	if d := s.cfg.Discovery; d != nil {
		mux.Handle("GET /api/v1/endpoints", s.protect(discoveryRoute(d.Endpoints)))
		mux.Handle("GET /api/v1/sd/prometheus", s.protect(discoveryRoute(d.PrometheusTargets)))
	}
	if p := s.cfg.Page; p != nil {
		// "/{$}" is "/" alone: other paths stay 404.
		mux.Handle("GET /{$}", s.protect(http.HandlerFunc(p.serveIndex)))
		mux.Handle("GET /ui/style.css", s.protect(serveAsset("style.css", "text/css; charset=utf-8")))
		mux.Handle("GET /ui/live.js", s.protect(serveAsset("live.js", "text/javascript; charset=utf-8")))
		mux.Handle("GET /api/v1/events", s.protect(http.HandlerFunc(p.serveEvents)))
	}
	mux.HandleFunc("POST /api/v1/sync", s.sync)
	for _, p := range providers {
		mux.HandleFunc("POST /hooks/"+p.name, s.webhook(p))
	}
	return s.logRequests(mux)
}

// Listen binds Config.Listen. Calling it before Serve lets the daemon fail
// at startup when the port is taken, and lets tests learn the port (Addr)
// before serving. Serve calls it when it has not been called.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.ln = ln
	if s.token == nil && !isLoopback(ln.Addr()) {
		s.log.Warn("sync endpoint needs no token but the server listens beyond loopback; set a sync token file or listen on 127.0.0.1", "addr", ln.Addr().String())
	}
	return nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// Addr returns the bound address once Listen (or Serve) has bound it, nil
// before.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Serve serves HTTP until ctx ends, then shuts down gracefully: it stops
// accepting, waits up to 5s for requests in flight, and closes the rest.
// It returns nil after a clean shutdown. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("server: Serve called twice")
	}
	s.serving = true
	ln := s.ln
	s.mu.Unlock()

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if p := s.cfg.Page; p != nil {
		// Shutdown waits for handlers, and an event stream would never
		// end by itself.
		srv.RegisterOnShutdown(p.Close)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("http server listening", "addr", ln.Addr().String())

	select {
	case err := <-errc:
		// Serve failed on its own (the listener broke).
		return fmt.Errorf("server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		// Requests still running past the bound: cut them off.
		_ = srv.Close()
		err = fmt.Errorf("server: shutdown: %w", err)
	}
	// Wait for the serving goroutine, so none outlives Serve.
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("server: %w", serr)
	}
	s.log.Info("http server stopped")
	return err
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := s.backend.Ready(); err != nil {
		writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	writeText(w, http.StatusOK, "ok")
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.backend.Status())
}

// discoveryRoute serves a discovery body, or 503 before the first observe.
func discoveryRoute(body func() (any, bool)) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		v, ok := body()
		if !ok {
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "nothing observed yet"})
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (s *Server) sync(w http.ResponseWriter, r *http.Request) {
	if !s.syncAuthorized(w, r) {
		return
	}
	s.backend.Trigger("api")
	s.log.Info("sync triggered", "reason", "api", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusAccepted, map[string]bool{"triggered": true})
}

// syncAuthorized checks the sync token, when there is one, and answers
// 401 when it is missing or wrong.
func (s *Server) syncAuthorized(w http.ResponseWriter, r *http.Request) bool {
	if s.token == nil || s.validBearer(r.Header.Get("Authorization")) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing or invalid bearer token"})
	return false
}

// validBearer reports whether an Authorization header carries the sync
// token. The scheme is case-insensitive (RFC 9110 §11.1).
func (s *Server) validBearer(header string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return secretEqual([]byte(strings.TrimSpace(tok)), s.token)
}

// secretEqual compares secrets in constant time. Hashing first makes the
// time independent of the lengths too, which ConstantTimeCompare alone
// leaks.
func secretEqual(a, b []byte) bool {
	ha, hb := sha256.Sum256(a), sha256.Sum256(b)
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, msg)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	// Encode first, so a value that cannot be encoded yields a 500
	// rather than a 200 with half a body.
	body, err := json.Marshal(v)
	if err != nil {
		writeText(w, http.StatusInternalServerError, "encoding response: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

// logRequests logs each request at debug: method, path, status, duration.
// Never headers or bodies, which carry tokens and signatures.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.log.Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, r)
		s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "status", rec.code,
			"duration", time.Since(start), "remote", r.RemoteAddr)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.code, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (flush,
// deadlines).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
