package live

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// testBridge is the test environment's bridge (testenv.sh up).
var testBridge = netip.MustParsePrefix("10.213.87.0/24")

// TestPortsOnTheBridge: a replica of hello:1 on the test bridge gets an
// address from the host's side; with its port 8080 declared it is ready,
// and with a port nothing listens on declared as well, WaitReady fails
// naming the port and the address and Observe finds the port closed. The
// same container serves both: ports replace nothing.
func TestPortsOnTheBridge(t *testing.T) {
	c := realLXD(t)
	ctx := context.Background()
	var network map[string]any
	if err := c.RawQuery(ctx, "GET", "/1.0/networks/berthbr0", nil, "", &network); err != nil {
		testlxd.SkipUnlessUsable(t, errors.New("no bridge berthbr0 (testenv.sh up creates it): "+err.Error()))
	}
	const owner = "berth-it-ports"
	sys := New(c, owner, engine.Options{})
	defer sys.Close()
	app := spec.App{Metadata: spec.Metadata{Name: "berth-it-ports"}, Spec: spec.AppSpec{
		Replicas: 1,
		System:   spec.System{Image: "berth/debian-docker", Profiles: []string{"default", "berth-test"}},
		Container: spec.Container{
			Image: "127.0.0.1:5000/berth/hello:1",
			Env:   map[string]string{"PORT": "8080"},
			Ports: []spec.Port{{Name: "http", Port: 8080, Protocol: "tcp"}},
		},
		Update: spec.Update{MaxUnavailable: spec.Count(1), HealthTimeout: spec.Duration(2 * time.Minute)},
	}}
	name := ownership.InstanceName(app.Metadata.Name, 0)
	_ = c.DeleteInstance(ctx, name) // a leftover of a killed run
	t.Cleanup(func() {
		_ = c.StopInstance(context.Background(), name, time.Second)
		_ = c.DeleteInstance(context.Background(), name)
	})
	if err := sys.CreateInstance(ctx, name, app, plan.ManagedConfig(app, owner, "r1", 0), ""); err != nil {
		t.Fatal(err)
	}
	if err := sys.EnsureContainer(ctx, name, app, 0, "r1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := sys.WaitReady(ctx, name, app); err != nil {
		t.Fatalf("hello:1 with port 8080 declared: %v", err)
	}
	t.Logf("ready with port 8080 open after %s", time.Since(start).Round(time.Millisecond))

	observe := func(a spec.App) plan.Instance {
		t.Helper()
		sys.SetPorts(spec.DeclaredPorts([]spec.App{a}))
		return observeInstance(ctx, t, sys, name)
	}
	inst := observe(app)
	addr, err := netip.ParseAddr(inst.Address())
	if err != nil || !testBridge.Contains(addr) {
		t.Fatalf("address %q (all %v): want one on %s", inst.Address(), inst.Addresses, testBridge)
	}
	if inst.ClosedPorts != nil || inst.PortsUnchecked != "" || plan.ReplicaAvailability(&inst) != plan.Ready {
		t.Errorf("port 8080 declared: closed %v, unchecked %q, %s", inst.ClosedPorts, inst.PortsUnchecked, plan.ReplicaAvailability(&inst))
	}

	// Port 9999 declared too: nothing listens there.
	bad := app
	bad.Spec.Container.Ports = append(slices.Clone(app.Spec.Container.Ports), spec.Port{Name: "admin", Port: 9999, Protocol: "tcp"})
	bad.Spec.Update.HealthTimeout = spec.Duration(3 * time.Second)
	if bad.Spec.Container.Hash() != app.Spec.Container.Hash() {
		t.Fatal("ports changed the container hash")
	}
	err = sys.WaitReady(ctx, name, bad)
	var nr *engine.NotReadyError
	if want := "port 9999/tcp closed on " + addr.String(); !errors.As(err, &nr) || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("WaitReady with port 9999 declared: %v, want an error ending %q", err, want)
	}
	inst = observe(bad)
	if !slices.Equal(inst.ClosedPorts, []string{"9999/tcp"}) || plan.ReplicaAvailability(&inst) != plan.Unavailable {
		t.Errorf("port 9999 declared: closed %v, unchecked %q, %s", inst.ClosedPorts, inst.PortsUnchecked, plan.ReplicaAvailability(&inst))
	}
	st := plan.BuildStatus(owner, nil, plan.Observed{Instances: []plan.Instance{inst}}, nil)
	if r := st.Apps[0].Replicas[0]; r.Address != addr.String() || r.Ready || r.Error != "port 9999/tcp closed on "+addr.String() {
		t.Errorf("status: %+v", r)
	}
}

// observeInstance observes everything and returns the instance name.
func observeInstance(ctx context.Context, t *testing.T, sys *System, name string) plan.Instance {
	t.Helper()
	obs, err := sys.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range obs.Instances {
		if i.Name == name {
			return i
		}
	}
	t.Fatalf("%s not observed", name)
	return plan.Instance{}
}
