package lxd

// Integration tests against a real LXD daemon. They run whenever LXD is
// reachable through the default socket and the test image alias
// berth/busybox exists. Without them, and with -short, they skip loudly
// unless LXD is required (CI, BERTH_REQUIRE_LXD): see internal/testlxd.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/internal/testlxd"
)

const testImage = "berth/busybox"

// realLXD connects to the local daemon, or skips or fails the test as
// testlxd decides.
func realLXD(tb testing.TB) *Client {
	tb.Helper()
	testlxd.Short(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, Config{UserAgent: "berth-test"})
	if err == nil {
		_, _, err = c.GetImageAlias(ctx, testImage)
		if err != nil {
			c.Close()
			err = fmt.Errorf("test image alias %q: %w", testImage, err)
		}
	}
	if err != nil {
		err = fmt.Errorf("LXD at %s: %w", DefaultSocketPath(), err)
	}
	testlxd.SkipUnlessUsable(tb, err)
	tb.Cleanup(c.Close)
	return c
}

func randSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cleanupCtx gives cleanups a context of their own: the test's may be over.
func cleanupCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

// launch creates and starts a busybox instance that is deleted when the
// test ends, even on failure.
func launch(tb testing.TB, c *Client, name string, config map[string]string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tb.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteInstance(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			tb.Errorf("cleanup: delete %s: %v", name, err)
		}
	})
	if err := c.CreateInstance(ctx, InstancesPost{Name: name, Source: ImageSource{Alias: testImage}, Profiles: []string{"default"}, Config: config}); err != nil {
		tb.Fatalf("create %s: %v", name, err)
	}
	if err := c.StartInstance(ctx, name); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
}

func TestIntegrationInstances(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	sfx := randSuffix()
	name := "berth-it-" + sfx
	owner := "berth-it-owner-" + sfx
	launch(t, c, name, map[string]string{"user.berth.owner": owner, "user.berth.app": "it"})

	t.Run("create twice is a conflict", func(t *testing.T) {
		err := c.CreateInstance(ctx, InstancesPost{Name: name, Source: ImageSource{Alias: testImage}})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("want ErrConflict, got %v", err)
		}
	})

	t.Run("start is idempotent", func(t *testing.T) {
		if err := c.StartInstance(ctx, name); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("list with owner filter", func(t *testing.T) {
		before := c.RequestCounts()["GET"]
		got, err := c.ListInstances(ctx, map[string]string{"config.user.berth.owner": owner})
		if err != nil {
			t.Fatal(err)
		}
		if n := c.RequestCounts()["GET"] - before; n != 1 {
			t.Errorf("ListInstances made %d requests", n)
		}
		if len(got) != 1 || got[0].Name != name {
			t.Fatalf("filtered list: %+v", got)
		}
		in := got[0]
		if !in.Running() || in.State == nil || in.State.Pid == 0 || in.State.StatusCode != StatusRunning || in.ExpandedDevices["root"]["type"] != "disk" || in.Config["user.berth.app"] != "it" {
			t.Fatalf("recursion=2 fields: %+v state %+v", in, in.State)
		}
		none, err := c.ListInstances(ctx, map[string]string{"config.user.berth.owner": owner + "-other"})
		if err != nil || len(none) != 0 {
			t.Fatalf("other owner: %v %+v", err, none)
		}
		// The value is matched exactly, not as a regular expression.
		none, err = c.ListInstances(ctx, map[string]string{"config.user.berth.owner": "berth-it-owner-.*"})
		if err != nil || len(none) != 0 {
			t.Fatalf("regexp-looking value matched: %v %+v", err, none)
		}
	})

	t.Run("get, etag, patch and stale etag", func(t *testing.T) {
		inst, etag, err := c.GetInstance(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if etag == "" || inst.Name != name || inst.State == nil {
			t.Fatalf("get: etag %q inst %+v", etag, inst)
		}
		if err := c.PatchInstance(ctx, name, InstancePatch{Config: map[string]string{"user.berth.test": "1"}}, etag); err != nil {
			t.Fatal(err)
		}
		// The config changed, so the old ETag is stale now.
		err = c.PatchInstance(ctx, name, InstancePatch{Config: map[string]string{"user.berth.test": "2"}}, etag)
		if !errors.Is(err, ErrPreconditionFailed) {
			t.Fatalf("stale etag: want ErrPreconditionFailed, got %v", err)
		}
		inst, etag2, err := c.GetInstance(ctx, name)
		if err != nil || inst.Config["user.berth.test"] != "1" || etag2 == etag {
			t.Fatalf("after patch: %v %v %q", err, inst.Config, etag2)
		}
		if err := c.PatchInstance(ctx, name, InstancePatch{Config: map[string]string{"user.berth.test": ""}}, etag2); err != nil {
			t.Fatal(err)
		}
		inst, etag3, err := c.GetInstance(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := inst.Config["user.berth.test"]; ok {
			t.Fatalf("patch with \"\" did not delete: %v", inst.Config)
		}
		// Read-modify-write with PUT keeps every volatile.* key.
		put := inst.Writable()
		put.Config["user.berth.put"] = "yes"
		if err := c.UpdateInstance(ctx, name, put, etag3); err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateInstance(ctx, name, put, etag3); !errors.Is(err, ErrPreconditionFailed) {
			t.Fatalf("stale PUT: %v", err)
		}
		inst, _, err = c.GetInstance(ctx, name)
		if err != nil || inst.Config["user.berth.put"] != "yes" {
			t.Fatalf("after put: %v %v", err, inst.Config)
		}
	})

	t.Run("exec", func(t *testing.T) {
		var out, errb bytes.Buffer
		code, err := c.Exec(ctx, name, ExecRequest{Command: []string{"cat"}, Stdin: strings.NewReader("hello\nworld\n"), Stdout: &out, Stderr: &errb})
		if err != nil || code != 0 || out.String() != "hello\nworld\n" {
			t.Fatalf("cat: code %d err %v out %q", code, err, out.String())
		}
		out.Reset()
		code, err = c.Exec(ctx, name, ExecRequest{
			Command: []string{"sh", "-c", "echo out; echo err >&2; echo $FOO; pwd; id -u; exit 3"},
			Env:     map[string]string{"FOO": "bar baz"}, Cwd: "/tmp", User: 1000, Group: 1000,
			Stdout: &out, Stderr: &errb,
		})
		if err != nil || code != 3 || out.String() != "out\nbar baz\n/tmp\n1000\n" || errb.String() != "err\n" {
			t.Fatalf("sh: code %d err %v out %q stderr %q", code, err, out.String(), errb.String())
		}
		// A command that does not exist.
		code, err = c.Exec(ctx, name, ExecRequest{Command: []string{"/no/such/binary"}})
		if err == nil && code == 0 {
			t.Fatalf("missing binary: code %d", code)
		}
		t.Logf("missing binary: code %d err %v", code, err)
	})

	t.Run("dial exec binary round trip", func(t *testing.T) {
		payload := make([]byte, 300*1024)
		_, _ = rand.Read(payload)
		var stderr bytes.Buffer
		conn, err := c.DialExec(ctx, name, []string{"cat"}, &lockedWriter{w: &stderr})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var wg sync.WaitGroup
		var werr error
		wg.Add(1)
		go func() { // Write concurrently with Read, in odd-sized pieces.
			defer wg.Done()
			for p := payload; len(p) > 0; {
				n := min(len(p), 7777)
				if _, werr = conn.Write(p[:n]); werr != nil {
					return
				}
				p = p[n:]
			}
			werr = conn.CloseWrite()
		}()
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(conn)
		wg.Wait()
		if err != nil || werr != nil {
			t.Fatalf("read err %v write err %v", err, werr)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("round trip mismatch: got %d bytes, want %d", len(got), len(payload))
		}
		code, err := conn.Wait(ctx)
		if err != nil || code != 0 {
			t.Fatalf("cat exit %d %v (stderr %q)", code, err, stderr.String())
		}
		if err := conn.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	})

	t.Run("dial exec deadlines and close kills", func(t *testing.T) {
		c.Close() // idle HTTP connections have goroutines of their own
		before := runtime.NumGoroutine()
		conn, err := c.DialExec(ctx, name, []string{"cat"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("want deadline exceeded, got %v", err)
		}
		// The connection is still usable after a read timeout.
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("after timeout: %q %v", buf, err)
		}
		// A blocked Read is released by Close from another goroutine.
		_ = conn.SetReadDeadline(time.Time{})
		done := make(chan error, 1)
		go func() { _, err := conn.Read(buf); done <- err }()
		time.Sleep(50 * time.Millisecond)
		_ = conn.Close()
		if err := <-done; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("blocked read after close: %v", err)
		}
		code, err := conn.Wait(ctx)
		t.Logf("cat after Close: exit %d err %v", code, err)
		// Closing control makes LXD SIGKILL the command (137); LXD also
		// closes its stdin as the other streams go, and cat may see that EOF
		// first and exit 0. Either way the command is gone.
		if err == nil && code != 137 && code != 0 {
			t.Errorf("closing should end the command (137, or 0 on stdin EOF), got %d", code)
		}
		// Exec too must leave nothing behind.
		if _, err := c.Exec(ctx, name, ExecRequest{Command: []string{"cat"}, Stdin: strings.NewReader("x")}); err != nil {
			t.Fatal(err)
		}
		c.Close()
		deadline := time.Now().Add(3 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			c.Close()
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})

	t.Run("dial exec under http.Transport", func(t *testing.T) {
		// busybox httpd -i serves one HTTP connection on stdin/stdout, a
		// stand-in for `docker system dial-stdio`.
		if code, err := c.Exec(ctx, name, ExecRequest{Command: []string{"sh", "-c", "mkdir -p /tmp/www && echo hi > /tmp/www/index.html"}}); err != nil || code != 0 {
			t.Fatal(code, err)
		}
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.DialExec(ctx, name, []string{"busybox", "httpd", "-i", "-h", "/tmp/www"}, nil)
		}}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := hc.Get("http://instance/index.html")
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || string(body) != "hi\n" {
					errs <- fmt.Errorf("status %d body %q err %v", resp.StatusCode, body, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})

	t.Run("snapshots", func(t *testing.T) {
		if err := c.CreateSnapshot(ctx, name, "snap0", false); err != nil {
			t.Fatal(err)
		}
		snaps, err := c.ListSnapshots(ctx, name)
		if err != nil || len(snaps) != 1 || snaps[0].Name != "snap0" {
			t.Fatalf("list: %v %+v", err, snaps)
		}
		if err := c.PatchInstance(ctx, name, InstancePatch{Config: map[string]string{"user.berth.after": "1"}}, ""); err != nil {
			t.Fatal(err)
		}
		if err := c.RestoreSnapshot(ctx, name, "snap0"); err != nil {
			t.Fatal(err)
		}
		inst, _, err := c.GetInstance(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := inst.Config["user.berth.after"]; ok {
			t.Fatalf("restore kept a later key: %v", inst.Config)
		}
		if err := c.DeleteSnapshot(ctx, name, "snap0"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetSnapshot(ctx, name, "snap0"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("deleted snapshot: %v", err)
		}
		snaps, err = c.ListSnapshots(ctx, name)
		if err != nil || len(snaps) != 0 {
			t.Fatalf("after delete: %v %+v", err, snaps)
		}
	})

	t.Run("stop is idempotent and forces", func(t *testing.T) {
		// The busybox init ignores SIGPWR, so the clean stop times out after
		// a second and the force path runs.
		if err := c.StopInstance(ctx, name, time.Second); err != nil {
			t.Fatal(err)
		}
		if err := c.StopInstance(ctx, name, time.Second); err != nil {
			t.Fatalf("second stop: %v", err)
		}
		inst, _, err := c.GetInstance(ctx, name)
		if err != nil || inst.Status != "Stopped" {
			t.Fatalf("status: %v %+v", err, inst)
		}
		_, err = c.Exec(ctx, name, ExecRequest{Command: []string{"true"}})
		var se *StatusError
		if !errors.As(err, &se) || se.Code != 400 {
			t.Fatalf("exec on stopped: %v", err)
		}
		if err := c.StartInstance(ctx, name); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("delete running and not found", func(t *testing.T) {
		if err := c.DeleteInstance(ctx, name); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.GetInstance(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get deleted: %v", err)
		}
		if err := c.DeleteInstance(ctx, name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delete deleted: %v", err)
		}
	})
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// tarball builds an uncompressed tar from name → content (a "->" prefix
// makes a symlink, a trailing "/" a directory).
func tarball(t *testing.T, files [][2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		name, body := f[0], f[1]
		hdr := &tar.Header{Name: name, Mode: 0o755, ModTime: time.Now()}
		switch {
		case strings.HasSuffix(name, "/"):
			hdr.Typeflag = tar.TypeDir
		case strings.HasPrefix(body, "->"):
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, strings.TrimPrefix(body, "->")
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(body))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func lxdArch() string {
	switch runtime.GOARCH {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	}
	return runtime.GOARCH
}

func TestIntegrationImageImport(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		err = fmt.Errorf("no /bin/busybox (busybox-static, installed by testenv) to build an image: %w", err)
	}
	testlxd.SkipUnlessUsable(t, err)
	sfx := randSuffix()
	metaYAML := fmt.Sprintf("architecture: %s\ncreation_date: %d\nproperties:\n  description: berth-it %s\n", lxdArch(), time.Now().Unix(), sfx)
	rootfsFiles := [][2]string{
		{"bin/", ""}, {"sbin/", ""}, {"etc/", ""},
		{"bin/busybox", string(busybox)}, {"bin/sh", "->busybox"}, {"bin/cat", "->busybox"},
		{"sbin/init", "#!/bin/sh\nexec sleep 2147483647\n"},
		{"etc/berth-it-id", sfx}, // a unique fingerprint per run
	}
	meta := tarball(t, [][2]string{{"metadata.yaml", metaYAML}})
	rootfs := tarball(t, rootfsFiles)

	var deleteFPs []string
	alias := "berth-it/" + sfx
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteImageAlias(ctx, alias); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup alias: %v", err)
		}
		for _, fp := range deleteFPs {
			if err := c.DeleteImage(ctx, fp); err != nil && !errors.Is(err, ErrNotFound) {
				t.Errorf("cleanup image %s: %v", fp, err)
			}
		}
	})

	fp, err := c.ImportImage(ctx, bytes.NewReader(meta), bytes.NewReader(rootfs), ImageImportOptions{
		Filename: "berth-it.tar", Properties: map[string]string{"os": "busybox", "release": "it " + sfx},
	})
	if err != nil {
		t.Fatal(err)
	}
	deleteFPs = append(deleteFPs, fp)
	sum := sha256.Sum256(append(append([]byte{}, meta...), rootfs...))
	if want := hex.EncodeToString(sum[:]); fp != want {
		t.Fatalf("split fingerprint %s, want sha256(meta||rootfs) %s", fp, want)
	}
	img, _, err := c.GetImage(ctx, fp)
	if err != nil || img.Architecture != lxdArch() || img.Properties["release"] != "it "+sfx || img.Type != "container" {
		t.Fatalf("image: %v %+v", err, img)
	}

	// The same upload again fails in the operation with "already exists".
	_, err = c.ImportImage(ctx, bytes.NewReader(meta), bytes.NewReader(rootfs), ImageImportOptions{})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate upload: %v", err)
	}

	if err := c.CreateImageAlias(ctx, alias, fp, "berth integration test"); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateImageAlias(ctx, alias, fp, ""); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate alias: %v", err)
	}
	a, aetag, err := c.GetImageAlias(ctx, alias)
	if err != nil || a.Target != fp || a.Description != "berth integration test" {
		t.Fatalf("alias: %v %+v", err, a)
	}

	// Unified tarball: metadata.yaml and rootfs/ in one archive.
	unifiedFiles := [][2]string{{"metadata.yaml", metaYAML + "# unified\n"}, {"rootfs/", ""}}
	for _, f := range rootfsFiles {
		unifiedFiles = append(unifiedFiles, [2]string{"rootfs/" + f[0], f[1]})
	}
	unified := tarball(t, unifiedFiles)
	ufp, err := c.ImportImageUnified(ctx, bytes.NewReader(unified), ImageImportOptions{Public: false})
	if err != nil {
		t.Fatal(err)
	}
	deleteFPs = append(deleteFPs, ufp)
	usum := sha256.Sum256(unified)
	if ufp != hex.EncodeToString(usum[:]) {
		t.Fatalf("unified fingerprint %s", ufp)
	}
	if err := c.UpdateImageAlias(ctx, alias, ufp, "re-pointed", aetag); err != nil {
		t.Fatal(err)
	}
	if a, _, err := c.GetImageAlias(ctx, alias); err != nil || a.Target != ufp {
		t.Fatalf("re-pointed alias: %v %+v", err, a)
	}
	if err := c.DeleteImage(ctx, fp); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetImage(ctx, fp); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted image: %v", err)
	}
}

// writeCert makes a self-signed ECDSA client certificate and writes it as
// PEM files; it returns the paths and the DER bytes.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string, der []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"berth test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{name},
	}
	der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, der
}

func TestIntegrationHTTPS(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	sfx := randSuffix()

	// A free local port for core.https_address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()

	srv, etag, err := c.GetServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := srv.Config["core.https_address"].(string)
	if old != "" {
		t.Logf("core.https_address was %q; it is restored afterwards", old)
	}
	// A stale ETag is refused before anything changes.
	if err := c.UpdateServerConfig(ctx, srv.Config, "0000"); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("stale server ETag: %v", err)
	}
	if err := c.PatchServerConfig(ctx, map[string]any{"core.https_address": addr}, etag); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.PatchServerConfig(ctx, map[string]any{"core.https_address": old}, ""); err != nil {
			t.Errorf("cleanup: restore core.https_address: %v", err)
		}
	})

	certFile, keyFile, der := writeCert(t, dir, "berth-it-"+sfx)
	fpSum := sha256.Sum256(der)
	fp := hex.EncodeToString(fpSum[:])
	if err := c.AddCertificate(ctx, CertificatesPost{Name: "berth-it-" + sfx, Certificate: base64.StdEncoding.EncodeToString(der)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteCertificate(ctx, fp); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup: untrust: %v", err)
		}
	})
	if err := c.AddCertificate(ctx, CertificatesPost{Name: "again", Certificate: base64.StdEncoding.EncodeToString(der)}); !errors.Is(err, ErrConflict) {
		t.Fatalf("trusting twice: %v", err)
	}

	serverCert := filepath.Join(dir, "server.crt")
	if err := os.WriteFile(serverCert, []byte(srv.Environment.Certificate), 0o600); err != nil {
		t.Fatal(err)
	}
	url := "https://" + addr
	rc, err := Connect(ctx, Config{URL: url, ClientCert: certFile, ClientKey: keyFile, ServerCert: serverCert})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if rc.Server().Auth != "trusted" || rc.Server().Environment.ServerVersion == "" {
		t.Fatalf("remote server info: %+v", rc.Server())
	}
	if _, err := rc.ListInstances(ctx, nil); err != nil {
		t.Fatal(err)
	}

	// Exec over wss:// with the same TLS config.
	name := "berth-it-" + sfx
	launch(t, c, name, nil)
	var out bytes.Buffer
	code, err := rc.Exec(ctx, name, ExecRequest{Command: []string{"echo", "over https"}, Stdout: &out})
	if err != nil || code != 0 || out.String() != "over https\n" {
		t.Fatalf("exec over https: %d %v %q", code, err, out.String())
	}

	// An untrusted certificate gets a clear error.
	ucert, ukey, _ := writeCert(t, dir, "berth-it-untrusted-"+sfx)
	_, err = Connect(ctx, Config{URL: url, ClientCert: ucert, ClientKey: ukey, ServerCert: serverCert})
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("untrusted client: %v", err)
	}
	t.Logf("untrusted: %v", err)

	// A different pinned server certificate is refused by TLS.
	_, _, otherDER := writeCert(t, dir, "vm")
	other := filepath.Join(dir, "other.crt")
	_ = os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER}), 0o600)
	if _, err := Connect(ctx, Config{URL: url, ClientCert: certFile, ClientKey: keyFile, ServerCert: other}); err == nil {
		t.Fatal("connected with the wrong pinned server certificate")
	} else {
		t.Logf("wrong pin: %v", err)
	}
}

func BenchmarkListInstances(b *testing.B) {
	c := realLXD(b)
	ctx := context.Background()
	filter := map[string]string{"config.user.berth.owner": "berth-bench"}
	for b.Loop() {
		if _, err := c.ListInstances(ctx, filter); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkExecRoundTrip(b *testing.B) {
	c := realLXD(b)
	ctx := context.Background()
	name := "berth-it-bench-" + randSuffix()
	launch(b, c, name, nil)
	for b.Loop() {
		if code, err := c.Exec(ctx, name, ExecRequest{Command: []string{"true"}}); err != nil || code != 0 {
			b.Fatal(code, err)
		}
	}
}

func TestIntegrationProfiles(t *testing.T) {
	c := realLXD(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	name := "berth-it-" + randSuffix()
	if err := c.CreateProfile(ctx, name, ProfilePut{Config: map[string]string{"user.berth.test": "1"}, Description: "berth test"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteProfile(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup profile: %v", err)
		}
	})
	if err := c.CreateProfile(ctx, name, ProfilePut{}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate profile: %v", err)
	}
	p, etag, err := c.GetProfile(ctx, name)
	if err != nil || p.Config["user.berth.test"] != "1" || etag == "" {
		t.Fatalf("get: %v %+v %q", err, p, etag)
	}
	put := p.ProfilePut
	put.Config = map[string]string{"user.berth.test": "2"}
	if err := c.UpdateProfile(ctx, name, put, etag); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateProfile(ctx, name, put, etag); !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("stale profile etag: %v", err)
	}
	if p, _, err := c.GetProfile(ctx, name); err != nil || p.Config["user.berth.test"] != "2" {
		t.Fatalf("after update: %v %+v", err, p)
	}
}
