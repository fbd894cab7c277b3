package lxd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// endpoint is one address of the server: the socket, or one member of a
// cluster. A cluster's members share one certificate, so every endpoint
// of a client verifies the same pin.
type endpoint struct {
	url    string // as configured, for messages and the status page
	base   string // "http://lxd" or "https://host:port"
	wsBase string // "ws://lxd" or "wss://host:port"
	http   *http.Client
	ws     *websocket.Dialer
}

// splitURLs reads Config.URL: one address, or a comma-separated list of
// https:// member URLs of one cluster.
func splitURLs(s string) ([]string, error) {
	if !strings.Contains(s, ",") {
		return []string{s}, nil
	}
	var urls []string
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("lxd: %q in the list %q: a list of endpoints takes the https:// URLs of one cluster's members", u, s)
		}
		urls = append(urls, u)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("lxd: no URL in %q", s)
	}
	return urls, nil
}

// remoteEndpoint builds the endpoint of an https:// URL.
func remoteEndpoint(raw string, dialer *net.Dialer, tlsCfg *tls.Config) (*endpoint, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" {
		return nil, fmt.Errorf("lxd: bad URL %q", raw)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "8443")
	}
	dialTLS := unreachableTLS(host, dialer, tlsCfg)
	return &endpoint{
		url:    raw,
		base:   "https://" + host,
		wsBase: "wss://" + host,
		http: &http.Client{Transport: &http.Transport{
			ResponseHeaderTimeout: responseTimeout,
			DialTLSContext:        dialTLS,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       60 * time.Second,
			ForceAttemptHTTP2:     false,
		}},
		ws: &websocket.Dialer{NetDialTLSContext: dialTLS, HandshakeTimeout: 10 * time.Second},
	}, nil
}

// tlsHandshakeTimeout bounds a member's TLS handshake: a frozen member
// still accepts TCP connections (the kernel does), and only the
// handshake shows that nobody answers.
const tlsHandshakeTimeout = 10 * time.Second

// unreachableTLS dials host and completes the TLS handshake. A failure of
// either, before any byte of a request was sent, is an *UnreachableError,
// which is what lets a call move to the next member whatever its method.
// A certificate that does not verify is no outage and stays as it is.
func unreachableTLS(host string, dialer *net.Dialer, cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			return nil, &UnreachableError{Where: host, Err: err}
		}
		hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		defer cancel()
		if cfg.ServerName == "" {
			// Without a pinned certificate's name, the URL's host is the
			// name to verify, as net/http would set it.
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(host)
		}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(hctx); err != nil {
			_ = raw.Close()
			var cv *tls.CertificateVerificationError
			if ctx.Err() != nil || errors.As(err, &cv) {
				return nil, err
			}
			if hctx.Err() != nil {
				// Not the caller's deadline: say what happened instead of
				// wrapping one that reads as the caller's.
				err = fmt.Errorf("no answer within %s", tlsHandshakeTimeout)
			}
			return nil, &UnreachableError{Where: host, Err: fmt.Errorf("TLS handshake: %w", err)}
		}
		return conn, nil
	}
}

// Endpoint is the URL of the endpoint in use: the member that answered
// last, or the socket.
func (c *Client) Endpoint() string { return c.ep().url }

func (c *Client) ep() *endpoint { return c.eps[int(c.cur.Load())%len(c.eps)] }

// moveOn reports whether a call that failed with err on one endpoint may
// be sent to the next. A failure to connect (an *UnreachableError: nothing
// was sent) moves on whatever the call. Any other transport failure moves
// on only for a read, since a write may have been applied. An answer from
// LXD (a *StatusError) is the cluster's answer and stays.
func moveOn(method string, err error) bool {
	if errors.As(err, new(*UnreachableError)) {
		return true
	}
	if errors.As(err, new(*StatusError)) {
		return false
	}
	return method == http.MethodGet || method == http.MethodHead
}

// tryEndpoints runs call on the endpoint in use and, when it fails in a
// way moveOn allows, on the next ones in turn, each once. The endpoint
// that answered becomes the one in use. The error of the last try is
// returned, after the others' in the message.
func tryEndpoints[T any](ctx context.Context, c *Client, method string, call func(*endpoint) (T, error)) (T, error) {
	start := int(c.cur.Load())
	var failed []string
	for i := 0; ; i++ {
		idx := (start + i) % len(c.eps)
		out, err := call(c.eps[idx])
		if err == nil {
			if idx != start {
				c.cur.Store(int32(idx))
			}
			return out, nil
		}
		if i == len(c.eps)-1 || ctx.Err() != nil || !moveOn(method, err) {
			if len(failed) > 0 {
				err = fmt.Errorf("%w (also tried %s)", err, strings.Join(failed, "; "))
			}
			return out, err
		}
		failed = append(failed, c.eps[idx].url+": "+err.Error())
	}
}

// rewindBody makes a request body readable from its start for another
// endpoint. A body that cannot seek is reused as it is: it moves on only
// after an *UnreachableError, when nothing of it was read.
func rewindBody(r io.Reader) {
	if s, ok := r.(io.Seeker); ok {
		_, _ = s.Seek(0, io.SeekStart)
	}
}

// dialWebsocket connects a websocket (the event stream, an operation's
// socket) on the endpoints in turn. A refused upgrade is a *StatusError.
func (c *Client) dialWebsocket(ctx context.Context, path string, q url.Values, project bool) (*websocket.Conn, error) {
	return tryEndpoints(ctx, c, http.MethodGet, func(ep *endpoint) (*websocket.Conn, error) {
		c.count("GET", path)
		conn, resp, err := ep.ws.DialContext(ctx, c.url(ep.wsBase, path, q, project), http.Header{"User-Agent": {c.userAgent}})
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil && resp != nil {
			return nil, &StatusError{Code: resp.StatusCode, Message: err.Error(), Method: "GET", Path: path}
		}
		return conn, err
	})
}
