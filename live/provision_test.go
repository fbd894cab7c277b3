package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/spec"
)

func TestOutputTail(t *testing.T) {
	var many strings.Builder
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&many, "line %d\n", i)
	}
	wantMany := ""
	for i := 11; i <= 30; i++ {
		wantMany += fmt.Sprintf("line %d", i)
		if i < 30 {
			wantMany += "\n"
		}
	}
	long := strings.Repeat("0123456789", 600) // 6000 bytes, one line
	for _, tc := range []struct {
		name      string
		out       string
		truncated bool
		want      string
	}{
		{"empty", "", false, ""},
		{"blank", "\n\n  \n", false, ""},
		{"short", "ok\nfailed: x\n", false, "ok\nfailed: x"},
		{"last 20 lines", many.String(), false, wantMany},
		{"truncated drops the partial first line", "ne 1\nline 2\n", true, "line 2"},
		{"control characters escaped", "a\x1b[31mred\ttab\n", false, `a\x1b[31mred\ttab`},
		{"carriage returns keep what a terminal shows", "10%\r50%\r100%\r\ndone\r\n", false, "100%\ndone"},
		{"invalid UTF-8", "bad \xff byte\n", false, `bad \xff byte`},
		{"a long line is cut at a character", strings.Repeat("é", 3000), false, "..." + strings.Repeat("é", (ProvisionTailBytes-3)/2)},
		{"a very long line keeps its end", "first\n" + long + "\n", false, "..." + long[len(long)-(ProvisionTailBytes-3):]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := outputTail([]byte(tc.out), tc.truncated)
			if got != tc.want {
				t.Errorf("outputTail(%q) =\n%q\nwant\n%q", tc.out, got, tc.want)
			}
			if len(got) > ProvisionTailBytes || strings.Count(got, "\n") >= ProvisionTailLines {
				t.Errorf("tail too big: %d bytes, %d lines", len(got), strings.Count(got, "\n")+1)
			}
		})
	}
	// Many long lines: whole lines are dropped from the front.
	var wide strings.Builder
	for i := range 20 {
		fmt.Fprintf(&wide, "%02d %s\n", i, strings.Repeat("x", 200))
	}
	got := outputTail([]byte(wide.String()), false)
	if len(got) > ProvisionTailBytes || !strings.HasPrefix(got, "10 ") || !strings.HasPrefix(got[strings.LastIndexByte(got, '\n')+1:], "19 ") {
		t.Errorf("wide lines: %d bytes, starts %.10q", len(got), got)
	}
}

func TestFileOptions(t *testing.T) {
	for _, tc := range []struct {
		mode, owner string
		want        lxd.FileOptions
		bad         string
	}{
		{"", "", lxd.FileOptions{Mode: 0o644}, ""},
		{"0600", "1000:1001", lxd.FileOptions{UID: 1000, GID: 1001, Mode: 0o600}, ""},
		{"755", "0:0", lxd.FileOptions{Mode: 0o755}, ""},
		{"4755", "", lxd.FileOptions{}, "mode"},
		{"0999", "", lxd.FileOptions{}, "mode"},
		{"", "root:root", lxd.FileOptions{}, "owner"},
		{"", "1000", lxd.FileOptions{}, "owner"},
		{"", "-1:0", lxd.FileOptions{}, "owner"},
	} {
		got, err := fileOptions(spec.ProvisionFile{Mode: tc.mode, Owner: tc.owner})
		switch {
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("mode %q owner %q: %v, want an error about the %s", tc.mode, tc.owner, err, tc.bad)
		case tc.bad == "" && (err != nil || got != tc.want):
			t.Errorf("mode %q owner %q: %+v %v, want %+v", tc.mode, tc.owner, got, err, tc.want)
		}
	}
}

// TestProvisionErrorRetries: a failed provision holds the app and is
// retried after the backoff (config management fails for a while, e.g.
// with a mirror down); its message carries the reason, the member and the
// output.
func TestProvisionErrorRetries(t *testing.T) {
	err := fmt.Errorf("step: %w", &ProvisionError{Instance: "web-0", Reason: "[/srv/setup.sh] exited with code 2", Output: "E: no such package\nfailed"})
	if r := reconciler.RetryOf(err); r != reconciler.Retrying {
		t.Errorf("RetryOf = %s", r)
	}
	want := "step: provision of web-0: [/srv/setup.sh] exited with code 2; last output:\nE: no such package\nfailed"
	if err.Error() != want {
		t.Errorf("message:\n%s\nwant\n%s", err, want)
	}
	// On a cluster the member is named: a frozen one is often why a
	// provision timed out. A single host's "none" is no member.
	onM2 := &ProvisionError{Instance: "web-0", Location: "m2", Reason: "timed out after 5s running [/srv/setup.sh] (it and the processes it started were stopped)"}
	if want := "provision of web-0 on member m2: timed out after 5s running [/srv/setup.sh] (it and the processes it started were stopped)"; onM2.Error() != want {
		t.Errorf("message:\n%s\nwant\n%s", onM2, want)
	}
	if e := (&ProvisionError{Instance: "web-0", Location: "none", Reason: "x"}); e.Error() != "provision of web-0: x" {
		t.Errorf("single host: %s", e)
	}
	if got := commandText([]string{"sh", "-c", "echo \x1b[2J"}); got != `[sh -c echo \x1b[2J]` {
		t.Errorf("commandText = %q", got)
	}
}

// TestExitMarker: the line provisionScript writes on its stderr once the
// command exited is found however LXD splits the stream, and only a whole
// line counts.
func TestExitMarker(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		code   int
		ok     bool
	}{
		{"one write", []string{"berth-provision-exit 0\n"}, 0, true},
		{"split", []string{"berth-prov", "ision-exit 1", "7\n"}, 17, true},
		{"after noise", []string{strings.Repeat("x", 1000), "berth-provision-exit 3\n"}, 3, true},
		{"not yet a whole line", []string{"berth-provision-exit 1"}, 0, false},
		{"garbled", []string{"berth-provision-exit x\n"}, 0, false},
	} {
		m := &exitMarker{seen: make(chan struct{})}
		for _, w := range tc.writes {
			if n, err := m.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("%s: Write = %d, %v", tc.name, n, err)
			}
		}
		code, ok := m.code()
		closed := false
		select {
		case <-m.seen:
			closed = true
		default:
		}
		if code != tc.code || ok != tc.ok || closed != tc.ok {
			t.Errorf("%s: code %d %v (seen %v), want %d %v", tc.name, code, ok, closed, tc.code, tc.ok)
		}
	}
}

// observeLXD answers the three requests of an observe: the owned
// instances, all instance names, and the images (or a 500 when
// imagesFail). Any other request is a 404 and is recorded.
type observeLXD struct {
	mu         sync.Mutex
	instances  []map[string]any
	images     []map[string]any
	imagesFail bool
	volumes    []map[string]any
	other      []string
}

func (f *observeLXD) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(code int, meta any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		typ := "sync"
		if code >= 300 {
			typ = "error"
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"type": typ, "status_code": code, "error_code": code, "error": "fake", "metadata": meta})
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/1.0":
		reply(200, map[string]any{"api_version": "1.0", "auth": "trusted", "environment": map[string]any{"server_version": "5.0.2"}})
	case r.Method == "GET" && r.URL.Path == "/1.0/instances" && r.URL.Query().Get("recursion") != "":
		reply(200, f.instances)
	case r.Method == "GET" && r.URL.Path == "/1.0/instances":
		var urls []string
		for _, i := range f.instances {
			urls = append(urls, "/1.0/instances/"+i["name"].(string))
		}
		reply(200, urls)
	case r.Method == "GET" && r.URL.Path == "/1.0/cluster":
		reply(200, map[string]any{"enabled": false})
	case r.Method == "GET" && r.URL.Path == "/1.0/storage-pools":
		reply(200, []string{"/1.0/storage-pools/default"})
	case r.Method == "GET" && r.URL.Path == "/1.0/storage-pools/default/volumes/custom":
		reply(200, f.volumes)
	case r.Method == "GET" && r.URL.Path == "/1.0/images" && r.URL.Query().Get("recursion") == "1":
		if f.imagesFail {
			reply(500, nil)
			return
		}
		reply(200, f.images)
	default:
		f.other = append(f.other, r.Method+" "+r.URL.Path)
		reply(404, nil)
	}
}

func newObserveLXD(t *testing.T, f *observeLXD) *lxd.Client {
	return newFakeLXD(t, f.serve)
}

// newFakeLXD is a client of an LXD that h plays.
func newFakeLXD(t *testing.T, h http.HandlerFunc) *lxd.Client {
	sock := filepath.Join(t.TempDir(), "unix.socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := lxd.Connect(context.Background(), lxd.Config{URL: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestObserveManagedSystems: Observe records each replica's base image,
// ephemerality and effective privilege (its profiles' included), the
// server's images with their aliases and dates, and the time on the
// system's clock; a system-only replica gets no Docker look (no exec) but
// its ports are checked; a failed image list leaves Images out without
// failing the observe.
func TestObserveManagedSystems(t *testing.T) {
	const owner = "o"
	fp1, fp2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	f := &observeLXD{
		instances: []map[string]any{
			{
				"name": "db-0", "status": "Running", "status_code": 103, "ephemeral": true,
				"config": map[string]string{
					ownership.KeyOwner: owner, ownership.KeyApp: "db", ownership.KeySlot: "0",
					ownership.KeySystemOnly: "true", "volatile.base_image": fp1,
				},
				"expanded_config": map[string]string{"security.privileged": "TRUE"},
				"state": map[string]any{"status": "Running", "status_code": 103, "network": map[string]any{
					"eth0": map[string]any{"type": "broadcast", "addresses": []map[string]any{{"family": "inet", "address": "10.0.0.7", "scope": "global"}}},
				}},
			},
			{
				"name": "db-1", "status": "Stopped", "status_code": 102,
				"config": map[string]string{
					ownership.KeyOwner: owner, ownership.KeyApp: "db", ownership.KeySlot: "1",
					ownership.KeySystemOnly: "true", "volatile.base_image": fp2,
				},
			},
		},
		images: []map[string]any{
			{"fingerprint": fp2, "aliases": []map[string]string{}, "created_at": "1970-01-01T00:00:00Z", "uploaded_at": "2026-11-30T10:00:00Z"},
			{"fingerprint": fp1, "aliases": []map[string]string{{"name": "db/os"}, {"name": "base"}}, "created_at": "2026-11-01T00:00:00Z", "uploaded_at": "2026-11-02T00:00:00Z"},
		},
	}
	c := newObserveLXD(t, f)
	fc := clock.NewFake(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	sys := New(c, owner, engine.Options{Clock: fc})
	defer sys.Close()
	var dialed []string
	var mu sync.Mutex
	sys.ports.dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, address)
		mu.Unlock()
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	sys.SetPorts(map[string][]spec.Port{"db": {{Name: "pg", Port: 5432, Protocol: "tcp"}}})

	obs, err := sys.Observe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !obs.At.Equal(fc.Now()) {
		t.Errorf("At = %s, want the fake clock's %s", obs.At, fc.Now())
	}
	if len(obs.Instances) != 2 {
		t.Fatalf("instances: %+v", obs.Instances)
	}
	db0, db1 := obs.Instances[0], obs.Instances[1]
	if db0.BaseImage != fp1 || !db0.Ephemeral || !db0.Privileged || db1.BaseImage != fp2 || db1.Ephemeral || db1.Privileged {
		t.Errorf("db-0 %s %v %v, db-1 %s %v %v", db0.BaseImage, db0.Ephemeral, db0.Privileged, db1.BaseImage, db1.Ephemeral, db1.Privileged)
	}
	if db0.DockerError != "" || db0.Container != nil {
		t.Errorf("system-only db-0 has Docker state: %q %+v", db0.DockerError, db0.Container)
	}
	if got := sys.Requests(); got.Execs != 0 || len(f.other) != 0 {
		t.Errorf("Docker was dialed: %+v, other requests %q", got, f.other)
	}
	if !slices.Equal(db0.ClosedPorts, []string{"5432/tcp"}) || !slices.Equal(dialed, []string{"10.0.0.7:5432"}) {
		t.Errorf("ports of db-0: closed %v unchecked %q, dialed %v", db0.ClosedPorts, db0.PortsUnchecked, dialed)
	}
	if len(obs.Images) != 2 {
		t.Fatalf("images: %+v", obs.Images)
	}
	i1, i2 := obs.Images[0], obs.Images[1]
	if i1.Fingerprint != fp1 || !slices.Equal(i1.Aliases, []string{"base", "db/os"}) || !i1.Created.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("image 1: %+v", i1)
	}
	if i2.Fingerprint != fp2 || i2.Aliases != nil || !i2.Created.Equal(time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)) {
		t.Errorf("image 2 (no creation date): %+v", i2)
	}

	f.mu.Lock()
	f.imagesFail = true
	f.mu.Unlock()
	obs, err = sys.Observe(context.Background())
	if err != nil || obs.Images != nil || len(obs.Instances) != 2 {
		t.Errorf("with a failing image list: %v, images %+v, %d instances", err, obs.Images, len(obs.Instances))
	}
}

// TestEnsureContainerRefusesSystemOnly: a system-only app has no app
// container; asking for one fails at once, as permanent, touching
// nothing.
func TestEnsureContainerRefusesSystemOnly(t *testing.T) {
	f := &observeLXD{}
	c := newObserveLXD(t, f)
	sys := New(c, "o", engine.Options{})
	defer sys.Close()
	app := spec.App{Metadata: spec.Metadata{Name: "db"}, Spec: spec.AppSpec{System: spec.System{Image: "x"}}}
	err := sys.EnsureContainer(context.Background(), "db-0", app, 0, "r1")
	if err == nil || !strings.Contains(err.Error(), "system-only") || reconciler.RetryOf(err) != reconciler.Stalled {
		t.Errorf("EnsureContainer of a system-only app: %v", err)
	}
	if got := sys.Requests(); got.Total != 0 {
		t.Errorf("requests: %+v", got)
	}
}

// TestProvisionFileWriteIsWholeOrNothing: a provision file is pushed to a
// temporary name next to it and renamed into place, so a push that fails
// half way (LXD answering "no space left on device" once it has written
// part of it) leaves the old file as it was: the destination is never
// written nor deleted, the temporary file is deleted, and the error says
// which file failed and why.
func TestProvisionFileWriteIsWholeOrNothing(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	c := newFakeLXD(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		reply := func(code int, meta any) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			typ, msg := "sync", ""
			if code >= 300 {
				typ, msg = "error", "Failed to write file: write /etc/app.conf: no space left on device"
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"type": typ, "status_code": code, "error_code": code, "error": msg, "metadata": meta})
		}
		switch {
		case r.Method == "GET" && r.URL.Path == "/1.0":
			reply(200, map[string]any{"api_version": "1.0", "auth": "trusted", "environment": map[string]any{"server_version": "5.0.2"}})
		case r.Method == "GET" && r.URL.Path == "/1.0/instances/web-0":
			// Provisioned before: no first-boot wait, only the files.
			reply(200, map[string]any{"name": "web-0", "status": "Running", "status_code": 103, "location": "none",
				"config": map[string]string{ownership.KeyOwner: "o", ownership.KeyProvisionedAt: "2026-01-01T00:00:00Z"}})
		case strings.HasSuffix(r.URL.Path, "/files"):
			calls = append(calls, r.Method+" "+r.URL.Query().Get("path"))
			switch r.Method {
			case "HEAD":
				reply(404, nil) // LXD 5.0: stat before a push; no leftover
			case "POST":
				reply(500, nil) // the pool filled up during the write
			default:
				reply(200, nil)
			}
		default:
			calls = append(calls, r.Method+" "+r.URL.Path)
			reply(404, nil)
		}
	})
	sys := New(c, "o", engine.Options{})
	defer sys.Close()
	p := &spec.Provision{Files: []spec.ProvisionFile{{Source: "app.conf", Path: "/etc/app.conf", Content: []byte(strings.Repeat("x", 4<<20))}}}
	err := sys.Provision(context.Background(), "web-0", p)
	if err == nil || !strings.Contains(err.Error(), "provision of web-0: copy app.conf to /etc/app.conf: ") || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("a push that failed: %v", err)
	}
	tmp := tempPath("/etc/app.conf")
	if !strings.HasPrefix(tmp, "/etc/.berth-new-") {
		t.Errorf("temporary name %s is not hidden in the destination's directory", tmp)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"HEAD " + tmp, "POST " + tmp, "DELETE " + tmp}
	if !slices.Equal(calls, want) {
		t.Errorf("requests %q, want %q: only the temporary file is written, then deleted", calls, want)
	}
}

// provisionScript runs a command once per try: a second exec of the same
// try (LXD said the first never ran, but it did) waits for the first
// one's command and reports its exit code without running it again; a
// new try runs it. Run here with the host's /bin/sh, the pid file moved
// to a temporary directory.
func TestProvisionScriptRunsACommandOncePerTry(t *testing.T) {
	dir := t.TempDir()
	funcs := strings.Replace(provisionFuncs, "f=/run/berth/provision.pid", "f="+dir+"/provision.pid", 1)
	script := strings.Replace(provisionScript, "mkdir -p /run/berth", "mkdir -p "+dir, 1)
	runs := dir + "/runs"
	run := func(try, cmd string) (string, int) {
		t.Helper()
		c := exec.Command("/bin/sh", "-c", script, "berth-provision", funcs, try, "/bin/sh", "-c", cmd)
		out, err := c.CombinedOutput()
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	count := func() int {
		data, _ := os.ReadFile(runs)
		return strings.Count(string(data), "x")
	}
	cmd := "echo x >>" + runs + "; exit 3"
	if out, code := run("try1", cmd); code != 3 || count() != 1 || !strings.Contains(out, "berth-provision-exit 3") {
		t.Fatalf("first try: exit %d, %d runs\n%s", code, count(), out)
	}
	out, code := run("try1", cmd)
	if code != 3 || count() != 1 || !strings.Contains(out, "an earlier try of this provision started the command") {
		t.Errorf("the same try again: exit %d, %d runs; want exit 3 and still 1 run\n%s", code, count(), out)
	}
	if _, code := run("try2", cmd); code != 3 || count() != 2 {
		t.Errorf("a new try: exit %d, %d runs; want it run again", code, count())
	}
	// A try whose exec was lost while its command still runs: the same
	// try waits for it and reports its code.
	slow := "echo x >>" + runs + "; sleep 1; exit 5"
	first := exec.Command("/bin/sh", "-c", script, "berth-provision", funcs, "try3", "/bin/sh", "-c", slow)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Wait() }()
	for count() != 3 {
		time.Sleep(10 * time.Millisecond)
	}
	if out, code := run("try3", slow); code != 5 || count() != 3 {
		t.Errorf("the same try while the first runs: exit %d, %d runs; want 5 and 3\n%s", code, count(), out)
	}
}
