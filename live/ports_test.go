package live

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// listenLocal listens on 127.0.0.1 and accepts until the test ends; it
// returns the port.
func listenLocal(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// closedLocal returns a port of 127.0.0.1 nothing listens on.
func closedLocal(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

func tcp(name string, port int) spec.Port { return spec.Port{Name: name, Port: port, Protocol: "tcp"} }

func TestProbePorts(t *testing.T) {
	open, closed := listenLocal(t), closedLocal(t)
	s := &System{}
	ctx := context.Background()
	sem := make(chan struct{}, probeParallel)

	got, why := s.probePorts(ctx, sem, "127.0.0.1", []spec.Port{tcp("http", open), tcp("admin", closed)})
	if want := []string{strconv.Itoa(closed) + "/tcp"}; !slices.Equal(got, want) || why != "" {
		t.Errorf("one open, one closed: closed %v (%q), want %v", got, why, want)
	}
	got, why = s.probePorts(ctx, sem, "127.0.0.1", []spec.Port{tcp("http", open)})
	if got != nil || why != "" {
		t.Errorf("open: closed %v, unchecked %q", got, why)
	}
	// A refusal is an answer: the address is reached, the port closed.
	got, why = s.probePorts(ctx, sem, "127.0.0.1", []spec.Port{tcp("admin", closed)})
	if len(got) != 1 || why != "" {
		t.Errorf("closed only: closed %v, unchecked %q", got, why)
	}
}

// An address berth cannot reach, or that answers on no port, is not
// checked: the replica's readiness is left to its healthcheck.
func TestProbeUnreachable(t *testing.T) {
	ctx := context.Background()
	sem := make(chan struct{}, probeParallel)
	noRoute := &System{}
	noRoute.ports.dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
	}
	got, why := noRoute.probePorts(ctx, sem, "10.213.87.9", []spec.Port{tcp("http", 8080)})
	if got != nil || why != "10.213.87.9 is not reachable from here: no route to host" {
		t.Errorf("no route: closed %v, unchecked %q", got, why)
	}

	open := listenLocal(t)
	silent := &System{}
	silent.ports.dial = func(ctx context.Context, network, address string) (net.Conn, error) {
		if strings.HasSuffix(address, ":"+strconv.Itoa(open)) {
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		}
		<-ctx.Done() // a dropped SYN: no answer until the timeout
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	}
	start := time.Now()
	got, why = silent.probePorts(ctx, sem, "127.0.0.1", []spec.Port{tcp("a", 1), tcp("b", 2)})
	if got != nil || why != "no answer from 127.0.0.1 within 1s" {
		t.Errorf("no answer: closed %v, unchecked %q", got, why)
	}
	if d := time.Since(start); d > 3*ProbeTimeout {
		t.Errorf("two silent ports took %s: not dialed in parallel", d)
	}
	// One port answers: the address is reached, so the silent one is closed.
	got, why = silent.probePorts(ctx, sem, "127.0.0.1", []spec.Port{tcp("http", open), tcp("b", 2)})
	if !slices.Equal(got, []string{"2/tcp"}) || why != "" {
		t.Errorf("one answers: closed %v, unchecked %q", got, why)
	}
}

// checkPorts probes the declared TCP ports of each owned replica whose
// container runs, and only those.
func TestCheckPorts(t *testing.T) {
	open, closed := listenLocal(t), closedLocal(t)
	s := &System{Owner: "o"}
	s.SetPorts(spec.DeclaredPorts([]spec.App{
		{Metadata: spec.Metadata{Name: "web"}, Spec: spec.AppSpec{Container: spec.Container{Image: "reg/web:1",
			Ports: []spec.Port{tcp("http", open), tcp("admin", closed), {Name: "dns", Port: 53, Protocol: "udp"}}}}},
		{Metadata: spec.Metadata{Name: "ok"}, Spec: spec.AppSpec{Container: spec.Container{Image: "reg/x:1", Ports: []spec.Port{tcp("http", open)}}}},
		{Metadata: spec.Metadata{Name: "udp"}, Spec: spec.AppSpec{Container: spec.Container{Image: "reg/x:1", Ports: []spec.Port{{Name: "dns", Port: 53, Protocol: "udp"}}}}},
	}))
	inst := func(name, app, owner, addr string, c *plan.Container) plan.Instance {
		i := plan.Instance{Name: name, Status: "Running", Container: c,
			Config: map[string]string{ownership.KeyOwner: owner, ownership.KeyApp: app}}
		if addr != "" {
			i.Addresses = []string{addr, "192.0.2.1"}
		}
		return i
	}
	running := func() *plan.Container { return &plan.Container{Name: "x", State: "running"} }
	insts := []plan.Instance{
		inst("web-0", "web", "o", "127.0.0.1", running()),
		inst("web-1", "web", "o", "", running()),
		inst("web-2", "web", "o", "127.0.0.1", &plan.Container{State: "exited"}),
		inst("ok-0", "ok", "o", "127.0.0.1", running()),
		inst("udp-0", "udp", "o", "127.0.0.1", running()),
		inst("web-3", "web", "other", "127.0.0.1", running()),
		inst("none-0", "none", "o", "127.0.0.1", running()),
	}
	s.checkPorts(context.Background(), insts)
	want := map[string]struct {
		closed []string
		why    string
	}{
		"web-0": {closed: []string{strconv.Itoa(closed) + "/tcp"}},
		"web-1": {why: "no IPv4 address"},
	}
	for _, i := range insts {
		w := want[i.Name]
		if !slices.Equal(i.ClosedPorts, w.closed) || i.PortsUnchecked != w.why {
			t.Errorf("%s: closed %v, unchecked %q; want %v, %q", i.Name, i.ClosedPorts, i.PortsUnchecked, w.closed, w.why)
		}
	}
	if plan.ReplicaAvailability(&insts[0]) != plan.Unavailable || plan.ReplicaAvailability(&insts[3]) != plan.Ready {
		t.Error("a closed port must make the replica unavailable, open ones not")
	}
	s.SetPorts(nil)
	insts[0].ClosedPorts = nil
	s.checkPorts(context.Background(), insts[:1])
	if insts[0].ClosedPorts != nil {
		t.Error("checked ports after SetPorts(nil)")
	}
}

// stateLXD serves GET /1.0/instances/<name>/state with the network
// interfaces network() returns at each request.
func stateLXD(t *testing.T, network func() map[string]any) *lxd.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "unix.socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	reply := func(w http.ResponseWriter, code int, meta any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		body := map[string]any{"type": "sync", "status": "Success", "status_code": code, "metadata": meta}
		if code != 200 {
			body = map[string]any{"type": "error", "error_code": code, "error": "not found"}
		}
		_ = json.NewEncoder(w).Encode(body)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/1.0":
			reply(w, 200, map[string]any{"api_extensions": []string{"instance_get_full"}, "api_version": "1.0", "auth": "trusted"})
		case "/1.0/instances/web-0/state":
			reply(w, 200, map[string]any{"status": "Running", "status_code": 103, "network": network()})
		default:
			reply(w, 404, nil)
		}
	}))
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

func eth0(addrs ...string) map[string]any {
	var list []map[string]string
	for _, a := range addrs {
		list = append(list, map[string]string{"family": "inet", "address": a, "netmask": "8", "scope": "global"})
	}
	return map[string]any{
		"lo":   map[string]any{"type": "loopback", "addresses": []map[string]string{{"family": "inet", "address": "127.0.0.1", "scope": "local"}}},
		"eth0": map[string]any{"type": "broadcast", "addresses": list},
	}
}

func TestWaitPorts(t *testing.T) {
	open, closed := listenLocal(t), closedLocal(t)
	app := func(timeout time.Duration, ports ...spec.Port) spec.App {
		return spec.App{Metadata: spec.Metadata{Name: "web"}, Spec: spec.AppSpec{
			Container: spec.Container{Image: "reg/web:1", Ports: ports}, Update: spec.Update{HealthTimeout: spec.Duration(timeout)}}}
	}
	ctx := context.Background()

	var mu sync.Mutex
	network := eth0("127.0.0.1")
	c := stateLXD(t, func() map[string]any { mu.Lock(); defer mu.Unlock(); return network })
	sys := New(c, "o", engine.Options{})
	defer sys.Close()

	if err := sys.waitPorts(ctx, "web-0", app(time.Second, tcp("http", open)), time.Second); err != nil {
		t.Errorf("open port: %v", err)
	}
	if err := sys.waitPorts(ctx, "web-0", app(time.Second), time.Second); err != nil {
		t.Errorf("no ports: %v", err)
	}
	err := sys.waitPorts(ctx, "web-0", app(time.Second, tcp("http", open), tcp("admin", closed)), time.Second)
	var nr *engine.NotReadyError
	want := "web-0: app web not ready: timed out after 1s: port " + strconv.Itoa(closed) + "/tcp closed on 127.0.0.1"
	if !errors.As(err, &nr) || !nr.Permanent() || err.Error() != want {
		t.Errorf("closed port: %v, want %q", err, want)
	}

	// A port that opens while berth waits.
	late := closedLocal(t)
	go func() {
		time.Sleep(700 * time.Millisecond)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(late))
		if err != nil {
			return // taken meanwhile: the wait below fails and says so
		}
		t.Cleanup(func() { ln.Close() })
	}()
	if err := sys.waitPorts(ctx, "web-0", app(5*time.Second, tcp("http", late)), 5*time.Second); err != nil {
		t.Errorf("late port: %v", err)
	}

	// No network interface, or no lease within the timeout: not checked.
	mu.Lock()
	network = map[string]any{"lo": eth0()["lo"]}
	mu.Unlock()
	start := time.Now()
	if err := sys.waitPorts(ctx, "web-0", app(time.Minute, tcp("admin", closed)), time.Minute); err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("no NIC: %v after %s", err, time.Since(start))
	}
	mu.Lock()
	network = eth0()
	mu.Unlock()
	start = time.Now()
	if err := sys.waitPorts(ctx, "web-0", app(time.Second, tcp("admin", closed)), time.Second); err != nil || time.Since(start) > 5*time.Second {
		t.Errorf("no address: %v after %s", err, time.Since(start))
	}
}
