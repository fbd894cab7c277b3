package engine

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeDaemon is an HTTP server speaking a little of the Docker API, reached
// through a fake Dialer that connects to it over TCP: enough to test the
// client plumbing (negotiation, reuse, error mapping) without LXD.
type fakeDaemon struct {
	t       *testing.T
	srv     *httptest.Server
	api     string // Api-Version header of /_ping
	dials   atomic.Int64
	dialErr error // returned by the dialer when set

	mu       sync.Mutex
	handlers map[string]http.HandlerFunc // "METHOD /path-without-version"
	requests []string
}

func newFakeDaemon(t *testing.T, api string) *fakeDaemon {
	f := &fakeDaemon{t: t, api: api, handlers: map[string]http.HandlerFunc{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDaemon) handle(key string, h http.HandlerFunc) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handlers[key] = h
}

func (f *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == "/_ping" {
		w.Header().Set("Api-Version", f.api)
		w.Header().Set("Ostype", "linux")
		_, _ = io.WriteString(w, "OK")
		return
	}
	// Strip "/v1.xx".
	if strings.HasPrefix(p, "/v") {
		if i := strings.IndexByte(p[1:], '/'); i >= 0 {
			if got := p[2 : i+1]; got != f.api {
				http.Error(w, `{"message":"client version `+got+` is not the negotiated `+f.api+`"}`, http.StatusBadRequest)
				return
			}
			p = p[i+1:]
		}
	}
	key := r.Method + " " + p
	f.mu.Lock()
	f.requests = append(f.requests, key)
	h := f.handlers[key]
	f.mu.Unlock()
	if h == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"message":"no such thing: `+key+`"}`)
		return
	}
	h(w, r)
}

func (f *fakeDaemon) dialer() Dialer { return fakeDialer{f} }

// fakeDialer connects each tunnel to the fake daemon over TCP.
type fakeDialer struct{ f *fakeDaemon }

func (d fakeDialer) DialExec(ctx context.Context, instance string, command []string, stderr io.Writer) (net.Conn, error) {
	f := d.f
	f.dials.Add(1)
	if strings.Join(command, " ") != "docker system dial-stdio" {
		f.t.Errorf("dialer got command %q", command)
	}
	if f.dialErr != nil {
		return nil, f.dialErr
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", f.srv.Listener.Addr().String())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
