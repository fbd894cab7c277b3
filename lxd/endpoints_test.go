package lxd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// member is one fake cluster member over HTTPS; every member serves the
// same certificate, as a cluster's do.
type member struct {
	srv *httptest.Server
	mu  sync.Mutex
	// hits counts requests by "METHOD path".
	hits map[string]int
	// dropWrites makes the member read a write and drop the connection
	// without an answer: the write may have been applied.
	dropWrites bool
}

func newMember(t *testing.T) *member {
	m := &member{hits: map[string]int{}}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.hits[r.Method+" "+r.URL.Path]++
		drop := m.dropWrites && r.Method != http.MethodGet
		m.mu.Unlock()
		switch {
		case drop:
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				_ = conn.Close()
			}
		case r.URL.Path == "/1.0":
			sync200(w, map[string]any{"api_version": "1.0", "auth": "trusted", "api_extensions": []string{"instance_get_full"}})
		default:
			sync200(w, map[string]any{"served": true})
		}
	}))
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	return m
}

func (m *member) count(key string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits[key]
}

// pin writes the members' certificate where Config.ServerCert reads it.
func pin(t *testing.T, m *member) string {
	p := filepath.Join(t.TempDir(), "cluster.crt")
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.srv.Certificate().Raw})
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// With a list of member URLs, berth uses the first that answers, moves to
// the next when the one in use stops answering, and says which it uses.
func TestEndpointsMoveToAMemberThatAnswers(t *testing.T) {
	a, b := newMember(t), newMember(t)
	down := httptest.NewUnstartedServer(http.NotFoundHandler())
	deadURL := "https://" + down.Listener.Addr().String()
	down.Listener.Close() // nothing listens there now
	ctx := context.Background()

	c, err := Connect(ctx, Config{URL: deadURL + "," + a.srv.URL + ", " + b.srv.URL, ServerCert: pin(t, a)})
	if err != nil {
		t.Fatalf("connect with the first member down: %v", err)
	}
	defer c.Close()
	if c.Endpoint() != a.srv.URL {
		t.Fatalf("endpoint in use %q; want the first that answers, %q", c.Endpoint(), a.srv.URL)
	}
	a.srv.Close()
	var out map[string]any
	if err := c.RawQuery(ctx, "GET", "/1.0/instances", nil, "", &out); err != nil || out["served"] != true {
		t.Fatalf("a read after the member in use went away: %v %v", out, err)
	}
	if c.Endpoint() != b.srv.URL || b.count("GET /1.0/instances") != 1 {
		t.Errorf("endpoint in use %q, reads on b %d; want b and 1", c.Endpoint(), b.count("GET /1.0/instances"))
	}
	// A write to a member nobody answers at moves on: nothing was sent.
	if err := c.RawQuery(ctx, "POST", "/1.0/instances", map[string]string{"name": "x"}, "", nil); err != nil || b.count("POST /1.0/instances") != 1 {
		t.Errorf("write: %v, on b %d", err, b.count("POST /1.0/instances"))
	}
}

// A write that reached a member and got no answer may have been applied:
// it is not sent to another member. A read is.
func TestEndpointsDoNotRepeatAWriteThatMayHaveLanded(t *testing.T) {
	a, b := newMember(t), newMember(t)
	c, err := Connect(context.Background(), Config{URL: a.srv.URL + "," + b.srv.URL, ServerCert: pin(t, a)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a.mu.Lock()
	a.dropWrites = true
	a.mu.Unlock()
	err = c.RawQuery(context.Background(), "POST", "/1.0/instances", map[string]string{"name": "x"}, "", nil)
	if err == nil || b.count("POST /1.0/instances") != 0 || a.count("POST /1.0/instances") != 1 {
		t.Errorf("err %v, POSTs on a %d, on b %d; want an error and the one POST on a", err, a.count("POST /1.0/instances"), b.count("POST /1.0/instances"))
	}
	if c.Endpoint() != a.srv.URL {
		t.Errorf("endpoint %q; want a still", c.Endpoint())
	}
}

// Every member down: the error names each, and a list takes only https
// URLs.
func TestEndpointsAllDownAndBadLists(t *testing.T) {
	var urls []string
	for range 2 {
		s := httptest.NewUnstartedServer(http.NotFoundHandler())
		urls = append(urls, "https://"+s.Listener.Addr().String())
		s.Listener.Close()
	}
	m := newMember(t)
	_, err := Connect(context.Background(), Config{URL: strings.Join(urls, ","), ServerCert: pin(t, m)})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), urls[0]) || !strings.Contains(err.Error(), strings.TrimPrefix(urls[1], "https://")) {
		t.Errorf("all down: %v; want ErrUnreachable naming both", err)
	}
	for _, bad := range []string{"https://a,unix:///x", " , "} {
		if _, err := Connect(context.Background(), Config{URL: bad}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Without a pinned certificate (system roots), the name verified is the
// URL's host, as net/http would set it: a dial of its own must not lose
// it ("either ServerName or InsecureSkipVerify must be specified").
func TestEndpointsVerifyTheURLHostWithoutAPin(t *testing.T) {
	m := newMember(t)
	pool := x509.NewCertPool()
	pool.AddCert(m.srv.Certificate())
	host := strings.TrimPrefix(m.srv.URL, "https://")
	dial := unreachableTLS(host, &net.Dialer{}, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
	conn, err := dial(context.Background(), "tcp", host)
	if err != nil {
		t.Fatalf("TLS to %s without a pin: %v", host, err)
	}
	_ = conn.Close()
}
