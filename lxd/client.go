package lxd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Config says how to reach LXD.
type Config struct {
	// URL is "" (the default local socket, see DefaultSocketPath),
	// "unix:///path/to/unix.socket", a plain socket path, or
	// "https://host[:port]" (port 8443 when omitted).
	URL string
	// ClientCert and ClientKey are PEM files of the TLS client certificate
	// (HTTPS only). The server must trust it (lxc config trust add).
	ClientCert, ClientKey string
	// ServerCert is the PEM file of the server (or cluster) certificate.
	// It is pinned: it is the only root of trust, and the TLS server name is
	// its first DNS name, as LXD's own client does. Empty means the system
	// roots and the host name from URL.
	ServerCert string
	// Project is sent as ?project= on every project-scoped call; "" means
	// the server's default project.
	Project string
	// Target is the cluster member for new instances (?target=, also
	// "@group"); "" lets LXD place them.
	Target string
	// UserAgent defaults to "berth".
	UserAgent string
}

// responseTimeout bounds how long LXD may take to start answering one
// request, so a wedged daemon fails a call even when the caller's context
// has no deadline. It is well above the longest legitimate wait: a
// /wait?timeout=30 long poll, or a synchronous config change.
const responseTimeout = 2 * time.Minute

// Client talks to one LXD server (or cluster) for one project. It is safe for
// concurrent use.
type Client struct {
	// OnRequest, when set, is called before every HTTP request (including
	// websocket dials) with the method and the path without query. Set it
	// before the client is shared between goroutines.
	OnRequest func(method, path string)

	// eps are the server's endpoints: one, or the members of a cluster
	// given as a list; cur is the one in use (see tryEndpoints).
	eps       []*endpoint
	cur       atomic.Int32
	project   string
	target    string
	userAgent string
	server    Server
	serverTag string

	// waitSlice bounds one /wait request (seconds); a timed-out wait is
	// simply repeated, so ctx cancellation is noticed at least this often
	// even if the transport ignored ctx.
	waitSlice int

	mu     sync.Mutex
	counts map[string]uint64

	// execStarts holds a token per exec being set up (maxExecStarts),
	// starts one per instance start running (maxStarts).
	execStarts chan struct{}
	starts     chan struct{}
}

// systemSockets are where LXD installs put their socket: the Debian
// package, then the snap.
var systemSockets = []string{"/var/lib/lxd/unix.socket", "/var/snap/lxd/common/lxd/unix.socket"}

// defaultSockets are the local sockets LXD's own client would try, in
// order: $LXD_SOCKET, else $LXD_DIR/unix.socket, else systemSockets.
func defaultSockets() []string {
	if p := os.Getenv("LXD_SOCKET"); p != "" {
		return []string{p}
	}
	if d := os.Getenv("LXD_DIR"); d != "" {
		return []string{filepath.Join(d, "unix.socket")}
	}
	return systemSockets
}

// socketExists reports whether path may be a socket to dial: it exists, or
// it cannot be looked at (the dial then says why).
func socketExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// DefaultSocketPath returns the local socket LXD's own client would use:
// $LXD_SOCKET, else $LXD_DIR/unix.socket, else the Debian package's
// /var/lib/lxd/unix.socket when it exists, else the snap's socket.
func DefaultSocketPath() string {
	paths := defaultSockets()
	for _, p := range paths {
		if socketExists(p) {
			return p
		}
	}
	return paths[len(paths)-1]
}

// dialDefaultSocket dials the first of defaultSockets that exists, looked
// up at each dial (LXD may start after berth). When none exists it fails at
// once, naming every path it looked at: naming only the last would send a
// Debian user whose LXD is down looking for the snap.
func dialDefaultSocket(dialer *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		paths := defaultSockets()
		for _, p := range paths {
			if socketExists(p) {
				return unreachable(p, func(ctx context.Context, _, _ string) (net.Conn, error) {
					return dialer.DialContext(ctx, "unix", p)
				})(ctx, "unix", p)
			}
		}
		return nil, &UnreachableError{Where: strings.Join(paths, " or "), Err: errors.New("no such socket (is LXD installed and running?)")}
	}
}

// Connect builds a client and checks the server with GET /1.0. Over HTTPS, a
// client certificate the server does not trust is an error wrapping
// ErrUntrusted.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	c := &Client{
		project:    cfg.Project,
		target:     cfg.Target,
		userAgent:  cfg.UserAgent,
		waitSlice:  30,
		counts:     map[string]uint64{},
		execStarts: make(chan struct{}, maxExecStarts),
		starts:     make(chan struct{}, maxStarts),
	}
	if c.userAgent == "" {
		c.userAgent = "berth"
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	urls, err := splitURLs(cfg.URL)
	if err != nil {
		return nil, err
	}
	remote := strings.HasPrefix(urls[0], "https://")
	switch {
	case remote:
		tlsCfg, err := tlsConfig(cfg)
		if err != nil {
			return nil, err
		}
		for _, u := range urls {
			ep, err := remoteEndpoint(u, dialer, tlsCfg)
			if err != nil {
				return nil, err
			}
			c.eps = append(c.eps, ep)
		}
	case cfg.URL == "" || strings.HasPrefix(cfg.URL, "unix://") || !strings.Contains(cfg.URL, "://"):
		c.eps = []*endpoint{socketEndpoint(cfg.URL, dialer)}
	default:
		return nil, fmt.Errorf("lxd: unsupported URL %q (want https://, unix:// or a socket path)", cfg.URL)
	}
	for _, ep := range c.eps {
		// LXD never redirects API calls; a redirect would re-send bodies
		// we stream, so refuse them.
		ep.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}

	srv, etag, err := c.GetServer(ctx)
	if err != nil {
		c.Close()
		return nil, err
	}
	if srv.Auth != "trusted" {
		c.Close()
		where := cfg.URL
		if remote && cfg.ClientCert == "" {
			return nil, fmt.Errorf("%w: %s (auth %q): no client certificate configured", ErrUntrusted, where, srv.Auth)
		}
		return nil, fmt.Errorf("%w: %s answered auth %q; add the certificate to its trust store (lxc config trust add)", ErrUntrusted, where, srv.Auth)
	}
	c.server, c.serverTag = *srv, etag
	return c, nil
}

// socketEndpoint is the endpoint of a local socket: path, or "" for the
// default one.
func socketEndpoint(raw string, dialer *net.Dialer) *endpoint {
	path := strings.TrimPrefix(raw, "unix://")
	dial := dialDefaultSocket(dialer)
	if path != "" {
		dial = unreachable(path, func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", path)
		})
	}
	// Over the socket LXD speaks plain HTTP/1.1; the host name is
	// irrelevant.
	return &endpoint{
		url:    "unix://" + path,
		base:   "http://lxd",
		wsBase: "ws://lxd",
		http: &http.Client{Transport: &http.Transport{
			ResponseHeaderTimeout: responseTimeout,
			DialContext:           dial,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       60 * time.Second,
		}},
		ws: &websocket.Dialer{NetDialContext: dial, HandshakeTimeout: 10 * time.Second},
	}
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	// LXD requires TLS 1.3 unless LXD_INSECURE_TLS is set on the server.
	t := &tls.Config{MinVersion: tls.VersionTLS13}
	if cfg.ClientCert != "" || cfg.ClientKey != "" {
		pair, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("lxd: client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	if cfg.ServerCert != "" {
		data, err := os.ReadFile(cfg.ServerCert)
		if err != nil {
			return nil, fmt.Errorf("lxd: server certificate: %w", err)
		}
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("lxd: server certificate %s: no PEM CERTIFICATE block", cfg.ServerCert)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("lxd: server certificate %s: %w", cfg.ServerCert, err)
		}
		// Pin: the server's self-signed certificate is the only root, and
		// its first DNS name is the name we verify (LXD certificates carry
		// the host name, not necessarily the address we dial). This is
		// what LXD's own client does (shared/network.go finalizeTLSConfig).
		pool := x509.NewCertPool()
		pool.AddCert(cert)
		t.RootCAs = pool
		if len(cert.DNSNames) > 0 {
			t.ServerName = cert.DNSNames[0]
		}
	}
	return t, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	for _, ep := range c.eps {
		ep.http.CloseIdleConnections()
	}
}

// Server returns the server information read by Connect.
func (c *Client) Server() Server { return c.server }

// HasExtension reports whether the server lists the API extension.
func (c *Client) HasExtension(name string) bool {
	return slices.Contains(c.server.APIExtensions, name)
}

// Project is the project this client works in ("" = default).
func (c *Client) Project() string { return c.project }

// RequestCounts returns how many requests were made, by HTTP method.
func (c *Client) RequestCounts() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

func (c *Client) count(method, path string) {
	c.mu.Lock()
	c.counts[method]++
	c.mu.Unlock()
	if c.OnRequest != nil {
		c.OnRequest(method, path)
	}
}

// request describes one API call.
type request struct {
	method  string
	path    string     // "/1.0/..."; segments already escaped
	query   url.Values // extra query parameters
	project bool       // add ?project=
	body    any        // JSON-encoded unless it is an io.Reader
	ctype   string     // content type for io.Reader bodies
	header  http.Header
	etag    string // sent as If-Match
}

// response is LXD's envelope (lxd/response/response.go).
type response struct {
	Type       string          `json:"type"`
	Status     string          `json:"status"`
	StatusCode int             `json:"status_code"`
	Operation  string          `json:"operation"`
	ErrorCode  int             `json:"error_code"`
	Error      string          `json:"error"`
	Metadata   json.RawMessage `json:"metadata"`

	httpStatus int
	header     http.Header
}

func (r *response) decode(v any) error {
	if v == nil || len(r.Metadata) == 0 || string(r.Metadata) == "null" {
		return nil
	}
	if err := json.Unmarshal(r.Metadata, v); err != nil {
		return fmt.Errorf("lxd: decoding response metadata: %w", err)
	}
	return nil
}

// etag returns the ETag header without quotes (LXD strips them on If-Match).
func (r *response) etag() string {
	return strings.Trim(r.header.Get("ETag"), `"`)
}

func (c *Client) url(base, path string, query url.Values, project bool) string {
	q := url.Values{}
	for k, v := range query {
		q[k] = v
	}
	if project && c.project != "" {
		q.Set("project", c.project)
	}
	u := base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// do performs one request and returns the envelope. Non-2xx answers and
// "error" envelopes become *StatusError.
func (c *Client) do(ctx context.Context, r request) (*response, error) {
	var data []byte
	if r.body != nil {
		if _, ok := r.body.(io.Reader); !ok {
			var err error
			if data, err = json.Marshal(r.body); err != nil {
				return nil, fmt.Errorf("lxd: encoding %s %s: %w", r.method, r.path, err)
			}
		}
	}
	first := true
	return tryEndpoints(ctx, c, r.method, func(ep *endpoint) (*response, error) {
		var body io.Reader
		ctype := ""
		switch b := r.body.(type) {
		case nil:
		case io.Reader:
			if !first {
				rewindBody(b)
			}
			body, ctype = b, r.ctype
		default:
			body, ctype = bytes.NewReader(data), "application/json"
		}
		first = false
		return c.doAt(ctx, ep, r, body, ctype)
	})
}

// doAt sends r to one endpoint.
func (c *Client) doAt(ctx context.Context, ep *endpoint, r request, body io.Reader, ctype string) (*response, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, c.url(ep.base, r.path, r.query, r.project), body)
	if err != nil {
		return nil, fmt.Errorf("lxd: %s %s: %w", r.method, r.path, err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if r.etag != "" {
		req.Header.Set("If-Match", r.etag)
	}
	req.Header.Set("User-Agent", c.userAgent)
	c.count(r.method, r.path)
	resp, err := ep.http.Do(req)
	if err != nil {
		// Drop net/http's "Get http://lxd/...": the address that was
		// tried is what helps.
		if ue := (*UnreachableError)(nil); errors.As(err, &ue) {
			err = ue
		}
		return nil, fmt.Errorf("lxd: %s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	// Envelopes are small except for big listings; cap what we accept so a
	// confused peer can't exhaust memory.
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("lxd: %s %s: reading response: %w", r.method, r.path, err)
	}
	out := &response{httpStatus: resp.StatusCode, header: resp.Header}
	if jerr := json.Unmarshal(data, out); jerr != nil || out.Type == "" {
		if resp.StatusCode >= 300 {
			return nil, &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(data)), Method: r.method, Path: r.path}
		}
		return nil, fmt.Errorf("lxd: %s %s: unexpected response (HTTP %d): %.200q", r.method, r.path, resp.StatusCode, data)
	}
	if out.Type == "error" || resp.StatusCode >= 300 {
		code := out.ErrorCode
		if code == 0 {
			code = resp.StatusCode
		}
		return nil, &StatusError{Code: code, Message: out.Error, Method: r.method, Path: r.path}
	}
	return out, nil
}

// query performs a request that must be synchronous and decodes its
// metadata into v. It returns the ETag.
func (c *Client) query(ctx context.Context, r request, v any) (string, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return "", err
	}
	if resp.Type == "async" {
		// Some endpoints became async in later API versions; wait so the
		// caller's contract (the change is done) holds.
		op, err := c.operationFromResponse(resp)
		if err != nil {
			return "", err
		}
		_, err = c.waitOperation(ctx, op)
		return "", err
	}
	return resp.etag(), resp.decode(v)
}

// run performs a request that may be asynchronous and waits for its
// operation. It returns the final operation (nil for a sync answer).
func (c *Client) run(ctx context.Context, r request) (*Operation, error) {
	resp, err := c.do(ctx, r)
	if err != nil {
		return nil, err
	}
	if resp.Type != "async" {
		return nil, nil
	}
	op, err := c.operationFromResponse(resp)
	if err != nil {
		return nil, err
	}
	return c.waitOperation(ctx, op)
}

// RawQuery performs a request against an arbitrary API path (e.g.
// "/1.0/networks") and waits for it if it is asynchronous. It is an escape
// hatch for calls this package does not wrap; ?project= is added except for
// operation URLs. The metadata of a sync answer
// (or of the final operation) is decoded into out when out is not nil.
func (c *Client) RawQuery(ctx context.Context, method, path string, body any, etag string, out any) error {
	u, err := url.Parse(path)
	if err != nil {
		return fmt.Errorf("lxd: bad path %q: %w", path, err)
	}
	resp, err := c.do(ctx, request{method: method, path: u.EscapedPath(), query: u.Query(), project: !strings.HasPrefix(path, "/1.0/operations"), body: body, etag: etag})
	if err != nil {
		return err
	}
	if resp.Type != "async" {
		return resp.decode(out)
	}
	op, err := c.operationFromResponse(resp)
	if err != nil {
		return err
	}
	op, err = c.waitOperation(ctx, op)
	if err != nil {
		return err
	}
	if out != nil && len(op.Metadata) > 0 {
		return op.DecodeMetadata(out)
	}
	return nil
}

// pathEscape escapes one path segment (instance, snapshot, alias names may
// contain characters such as "/" in aliases).
func pathEscape(s string) string { return url.PathEscape(s) }

var errEmptyName = errors.New("lxd: empty name")
