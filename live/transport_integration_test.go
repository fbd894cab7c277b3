package live

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// Fault modes of socketProxy for operation websockets.
const (
	passWebsockets  = iota
	stallWebsockets // never answer the handshake: the client's read times out
	resetWebsockets // close the connection at once
)

// socketProxy stands between berth and LXD's unix socket and, on demand,
// breaks the websocket handshakes of operations (the exec streams) while
// every other request passes: the LXD transport fault of issue 18, where
// exec websockets of several instances timed out together.
type socketProxy struct {
	path    string
	mode    atomic.Int32
	faulted atomic.Int32
	// healAfter, when positive, passes websockets again once that many
	// have been broken: a transient stall.
	healAfter atomic.Int32
	done      chan struct{}
}

func newSocketProxy(t *testing.T, target string) *socketProxy {
	t.Helper()
	p := &socketProxy{path: filepath.Join(t.TempDir(), "lxd.socket"), done: make(chan struct{})}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { close(p.done); _ = l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.serve(c, target) }()
		}
	}()
	return p
}

func (p *socketProxy) serve(c net.Conn, target string) {
	defer c.Close()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n') // the request line
	if err != nil {
		return
	}
	if strings.Contains(line, "/websocket?") {
		if h := p.healAfter.Load(); h > 0 && p.faulted.Load() >= h {
			p.mode.Store(passWebsockets)
		}
		switch p.mode.Load() {
		case stallWebsockets:
			p.faulted.Add(1)
			<-p.done
			return
		case resetWebsockets:
			p.faulted.Add(1)
			return
		}
	}
	up, err := net.Dial("unix", target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() {
		_, _ = io.Copy(up, io.MultiReader(strings.NewReader(line), br))
		_ = up.(*net.UnixConn).CloseWrite()
	}()
	_, _ = io.Copy(c, up)
}

// TestLXDTransportFaultsLeaveDockerUnknown: with LXD's exec websockets
// stalled or reset, two healthy replicas' Docker is unknown, not "not
// answering": the plan has no restart and says it waits, the status names
// the reason, and a Restart's wait restarts nothing. Once the transport
// heals, the same replicas are observed healthy and the plan is empty.
func TestLXDTransportFaultsLeaveDockerUnknown(t *testing.T) {
	c := realLXD(t)
	ctx := context.Background()
	const owner = "berth-it-hiccup"
	app := spec.App{Metadata: spec.Metadata{Name: "berth-it-hiccup"}, Spec: spec.AppSpec{
		Replicas:  2,
		System:    spec.System{Image: "berth/debian-docker", Profiles: []string{"default", "berth-test"}},
		Container: spec.Container{Image: "127.0.0.1:5000/berth/hello:1", Env: map[string]string{"PORT": "8080"}},
		Update:    spec.Update{MaxUnavailable: spec.Count(2), HealthTimeout: spec.Duration(2 * time.Minute)},
	}}
	sys := New(c, owner, engine.Options{})
	defer sys.Close()
	names := []string{ownership.InstanceName(app.Metadata.Name, 0), ownership.InstanceName(app.Metadata.Name, 1)}
	deleteAll(c, names) // a killed run's
	t.Cleanup(func() { deleteAll(c, names) })
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = sys.CreateInstance(ctx, name, app, plan.ManagedConfig(app, owner, "r1", i), ""); errs[i] == nil {
				if errs[i] = sys.EnsureContainer(ctx, name, app, i, "r1"); errs[i] == nil {
					errs[i] = sys.WaitReady(ctx, name, app)
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	// One more look, soon: the fault outlasts it unless it heals.
	defer func(p []time.Duration) { unknownPauses = p }(unknownPauses)
	unknownPauses = []time.Duration{100 * time.Millisecond}
	proxy := newSocketProxy(t, lxd.DefaultSocketPath())
	pc, err := lxd.Connect(ctx, lxd.Config{URL: "unix://" + proxy.path})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	desired := plan.Desired{Revision: "r1", Apps: []spec.App{app}}
	for _, mode := range []int32{resetWebsockets, stallWebsockets} {
		proxy.mode.Store(mode)
		cold := New(pc, owner, engine.Options{}) // a cold plan: no tunnel yet
		obs, err := cold.Observe(ctx)
		cold.Close()
		if err != nil {
			t.Fatal(err)
		}
		pl := plan.MakePlan(desired, obs, plan.Policy{Owner: owner})
		for _, s := range pl.Steps {
			t.Errorf("mode %d: step %s %s planned from an LXD transport fault", mode, s.Action, s.Instance)
		}
		if len(pl.Unobserved) != 2 || pl.Converged() {
			t.Errorf("mode %d: unobserved %+v; want both replicas, waiting", mode, pl.Unobserved)
		}
		for _, inst := range obs.Instances {
			if inst.Config[ownership.KeyOwner] != owner {
				continue
			}
			if inst.DockerError != "" || !strings.Contains(inst.DockerUnknown, "websocket") {
				t.Errorf("mode %d: %s: docker error %q, unknown %q", mode, inst.Name, inst.DockerError, inst.DockerUnknown)
			}
		}
		st := plan.BuildStatus(owner, &desired, obs, nil)
		if r := st.Apps[0].Replicas[0]; !r.Unobserved || !strings.HasPrefix(r.Error, "docker state unknown") {
			t.Errorf("mode %d: status %+v", mode, r)
		}
		t.Logf("mode %d: %s", mode, pl.Summary())
	}
	// A Restart's wait through the same fault restarts nothing.
	proxy.mode.Store(resetWebsockets)
	cold := New(pc, owner, engine.Options{})
	err = cold.WaitDocker(ctx, names[0], 3*time.Second)
	cold.Close()
	if !errors.Is(err, reconciler.ErrDockerUnreached) {
		t.Errorf("WaitDocker through a broken transport: %v; want ErrDockerUnreached", err)
	}
	if proxy.faulted.Load() == 0 {
		t.Fatal("the proxy broke no websocket: the fault was not exercised")
	}

	// A stall that ends while berth looks again: the observe that
	// looked again knows both replicas, and the plan is empty.
	proxy.faulted.Store(0)
	proxy.healAfter.Store(2)
	proxy.mode.Store(resetWebsockets)
	again := New(pc, owner, engine.Options{})
	obs, err := again.Observe(ctx)
	again.Close()
	if err != nil {
		t.Fatal(err)
	}
	if pl := plan.MakePlan(desired, obs, plan.Policy{Owner: owner}); !pl.Converged() || proxy.faulted.Load() < 2 {
		t.Errorf("a stall that heals (%d websockets broken): %s\n%s", proxy.faulted.Load(), pl.Summary(), pl.Text())
	}

	proxy.healAfter.Store(0)
	proxy.mode.Store(passWebsockets)
	healed := New(pc, owner, engine.Options{})
	defer healed.Close()
	obs, err = healed.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pl := plan.MakePlan(desired, obs, plan.Policy{Owner: owner}); !pl.Converged() {
		t.Errorf("healed transport: %s\n%s", pl.Summary(), pl.Text())
	}
}
