package live

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// systemOnlyApp is a system-only app of the busybox test image.
func systemOnlyApp(name string, profiles ...string) spec.App {
	return spec.App{Metadata: spec.Metadata{Name: name}, Spec: spec.AppSpec{
		Replicas: 1,
		System:   spec.System{Image: "berth/busybox", Profiles: append([]string{"default"}, profiles...)},
		Update:   spec.Update{MaxUnavailable: spec.Count(1), HealthTimeout: spec.Duration(time.Minute)},
	}}
}

// createReplica creates and starts slot 0 of app as owner's, deleted when
// the test ends.
func createReplica(t *testing.T, sys *System, app spec.App) string {
	t.Helper()
	ctx := context.Background()
	name := ownership.InstanceName(app.Metadata.Name, 0)
	_ = sys.LXD.DeleteInstance(ctx, name) // a leftover of a killed run
	t.Cleanup(func() { _ = sys.LXD.DeleteInstance(context.Background(), name) })
	cfg := plan.ManagedConfig(app, sys.Owner, "r1", 0)
	if !app.Spec.HasContainer() {
		cfg[ownership.KeySystemOnly] = "true"
	}
	if err := sys.CreateInstance(ctx, name, app, cfg, ""); err != nil {
		t.Fatal(err)
	}
	return name
}

// inInstance runs a command in the instance and returns its output,
// failing the test unless it exits 0.
func inInstance(t *testing.T, c *lxd.Client, name string, cmd ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.ExecOutput(ctx, name, lxd.ExecRequest{Command: cmd}, 64<<10)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%q in %s: exit %d, %v: %s", cmd, name, res.ExitCode, err, res.Output)
	}
	return string(res.Output)
}

// TestProvisionBusybox: a provision's files land in the instance with
// their content, mode and owner (as ls -ln in the instance shows them),
// and its script runs after them; running it again with a changed file
// updates it in place. A failing script, a missing command and a timeout
// each fail (retried after the backoff) with what happened and the
// output's tail; an instance of another owner is refused.
func TestProvisionBusybox(t *testing.T) {
	c := realLXD(t)
	ctx := context.Background()
	const owner = "berth-it-prov"
	sys := New(c, owner, engine.Options{})
	sys.StopTimeout = time.Second
	defer sys.Close()
	app := systemOnlyApp("berth-it-prov")
	name := createReplica(t, sys, app)

	script := "#!/bin/sh\nset -e\n. /etc/berth-it/app.env\necho \"greeting=$GREETING\" > /var/lib/berth-it/state\necho configured\n"
	p := &spec.Provision{
		Files: []spec.ProvisionFile{
			{Source: "provision/setup.sh", Path: "/usr/local/sbin/berth-it-setup", Mode: "0750", Content: []byte(script)},
			{Source: "provision/app.env", Path: "/etc/berth-it/app.env", Mode: "0640", Owner: "1000:1001", Content: []byte("GREETING=hello\n")},
		},
		Run: []string{"sh", "-c", "mkdir -p /var/lib/berth-it && /usr/local/sbin/berth-it-setup"},
	}
	start := time.Now()
	if err := sys.Provision(ctx, name, p); err != nil {
		t.Fatal(err)
	}
	t.Logf("provisioned 2 files and a script in %s", time.Since(start).Round(time.Millisecond))
	ls := inInstance(t, c, name, "ls", "-ln", "/usr/local/sbin/berth-it-setup", "/etc/berth-it/app.env")
	for _, want := range []string{"-rwxr-x---    1 0        0 ", "-rw-r-----    1 1000     1001 "} {
		if !strings.Contains(ls, want) {
			t.Errorf("ls -ln lacks %q:\n%s", want, ls)
		}
	}
	if got := inInstance(t, c, name, "cat", "/var/lib/berth-it/state"); got != "greeting=hello\n" {
		t.Errorf("the script's result: %q", got)
	}

	// A changed file is updated in place and the script sees it.
	uuid := func() string {
		inst, _, err := c.GetInstance(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return inst.Config["volatile.uuid"]
	}
	before := uuid()
	p.Files[1].Content = []byte("GREETING=bonjour\n")
	p.Files[1].Mode = "0600"
	if err := sys.Provision(ctx, name, p); err != nil {
		t.Fatal(err)
	}
	if got := inInstance(t, c, name, "cat", "/var/lib/berth-it/state"); got != "greeting=bonjour\n" || uuid() != before {
		t.Errorf("after a change: %q (uuid %s, was %s)", got, uuid(), before)
	}
	if ls := inInstance(t, c, name, "ls", "-ln", "/etc/berth-it/app.env"); !strings.HasPrefix(ls, "-rw-------    1 1000     1001 ") {
		t.Errorf("after a mode change: %s", ls)
	}
	// Each file was pushed next to its destination and renamed into
	// place: nothing of that is left.
	for _, dir := range []string{"/etc/berth-it", "/usr/local/sbin"} {
		if ls := inInstance(t, c, name, "ls", "-A", dir); strings.Contains(ls, ".berth-new-") {
			t.Errorf("temporary files left in %s: %s", dir, ls)
		}
	}
	// A destination that is a directory is refused, not written into.
	err := sys.Provision(ctx, name, &spec.Provision{Files: []spec.ProvisionFile{{Source: "x", Path: "/etc/berth-it", Content: []byte("x")}}})
	if pe := (*ProvisionError)(nil); !errors.As(err, &pe) || pe.Reason != "file /etc/berth-it: could not move it into place: is a directory" {
		t.Errorf("a file over a directory: %v", err)
	}
	if ls := inInstance(t, c, name, "ls", "-A", "/etc"); strings.Contains(ls, ".berth-new-") {
		t.Errorf("temporary file left after a failed rename: %s", ls)
	}

	failing := func(run []string, timeout time.Duration, wantReason, wantOutput string) {
		t.Helper()
		err := sys.Provision(ctx, name, &spec.Provision{Run: run, Timeout: spec.Duration(timeout)})
		var pe *ProvisionError
		if !errors.As(err, &pe) || reconciler.RetryOf(err) != reconciler.Retrying {
			t.Fatalf("%q: %v, want a *ProvisionError, retried after the backoff", run, err)
		}
		if !strings.Contains(pe.Reason, wantReason) || !strings.HasSuffix(pe.Output, wantOutput) {
			t.Errorf("%q:\nreason %q, want it to contain %q\noutput %q, want it to end %q", run, pe.Reason, wantReason, pe.Output, wantOutput)
		}
		t.Logf("status would say: %v", err)
	}
	failing([]string{"sh", "-c", "for i in $(seq 1 100); do echo step $i; done; echo 'E: no such package' >&2; exit 7"}, 0,
		"exited with code 7", "step 99\nstep 100\nE: no such package")
	failing([]string{"/usr/local/sbin/no-such-tool"}, 0, "[/usr/local/sbin/no-such-tool] failed: Command not found", "/usr/local/sbin/no-such-tool: not found")
	start = time.Now()
	failing([]string{"sh", "-c", "echo waiting for Godot; exec sleep 300"}, 2*time.Second, "timed out after 2s running", "waiting for Godot")
	t.Logf("a 2s provision timeout ended the call in %s", time.Since(start).Round(time.Millisecond))

	// Not ours: refused, nothing written.
	other := New(c, owner+"-other", engine.Options{})
	defer other.Close()
	if err := other.Provision(ctx, name, &spec.Provision{Files: []spec.ProvisionFile{{Path: "/etc/intruder", Content: []byte("x")}}}); err == nil || !strings.Contains(err.Error(), "not owned") {
		t.Errorf("provision by another owner: %v", err)
	}
	if _, err := c.StatFile(ctx, name, "/etc/intruder"); !errors.Is(err, lxd.ErrNotFound) {
		t.Errorf("another owner's file: %v", err)
	}
}

// TestEphemeralAndPrivilegedObserved: an ephemeral replica is observed as
// such and is gone once stopped; a replica privileged by its config or
// by a profile is flagged; each replica's base image is the fingerprint its alias points
// to, and the images observed list that alias.
func TestEphemeralAndPrivilegedObserved(t *testing.T) {
	c := realLXD(t)
	ctx := context.Background()
	const owner = "berth-it-eph"
	sys := New(c, owner, engine.Options{})
	sys.StopTimeout = time.Second
	defer sys.Close()

	eph := systemOnlyApp("berth-it-eph")
	eph.Spec.System.Ephemeral = true
	ephName := createReplica(t, sys, eph)

	// Privileged by config; never started, only observed.
	priv := systemOnlyApp("berth-it-priv")
	priv.Spec.System.Config = map[string]string{"security.privileged": "true"}
	privName := ownership.InstanceName(priv.Metadata.Name, 0)
	_ = c.DeleteInstance(ctx, privName)
	t.Cleanup(func() { _ = c.DeleteInstance(context.Background(), privName) })
	if err := c.CreateInstance(ctx, lxd.InstancesPost{Name: privName, Source: lxd.ImageSource{Alias: "berth/busybox"},
		Profiles: []string{"default"}, Config: plan.ManagedConfig(priv, owner, "r1", 0)}); err != nil {
		t.Fatal(err)
	}

	// Privileged by a profile; never started either.
	const privProfile = "berth-it-privileged"
	byProfile := systemOnlyApp("berth-it-privprof", privProfile)
	byProfileName := ownership.InstanceName(byProfile.Metadata.Name, 0)
	_ = c.DeleteInstance(ctx, byProfileName)
	_ = c.DeleteProfile(ctx, privProfile)
	if err := c.CreateProfile(ctx, privProfile, lxd.ProfilePut{Config: map[string]string{"security.privileged": "true"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.DeleteInstance(context.Background(), byProfileName)
		_ = c.DeleteProfile(context.Background(), privProfile)
	})
	if err := c.CreateInstance(ctx, lxd.InstancesPost{Name: byProfileName, Source: lxd.ImageSource{Alias: "berth/busybox"},
		Profiles: byProfile.Spec.System.Profiles, Config: plan.ManagedConfig(byProfile, owner, "r1", 0)}); err != nil {
		t.Fatal(err)
	}

	alias, _, err := c.GetImageAlias(ctx, "berth/busybox")
	if err != nil {
		t.Fatal(err)
	}
	before := sys.Requests()
	obs, err := sys.Observe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := sys.Requests(); d.Execs != before.Execs {
		t.Errorf("observing system-only replicas made %d execs", d.Execs-before.Execs)
	}
	got := map[string]plan.Instance{}
	for _, i := range obs.Instances {
		got[i.Name] = i
	}
	if i := got[ephName]; !i.Ephemeral || i.Privileged || i.BaseImage != alias.Target || i.DockerError != "" || i.Container != nil {
		t.Errorf("ephemeral replica: %+v", i)
	}
	if i := got[privName]; i.Ephemeral || !i.Privileged || i.BaseImage != alias.Target {
		t.Errorf("privileged replica: %+v", i)
	}
	if i := got[byProfileName]; !i.Privileged {
		t.Errorf("replica privileged by its profile: %+v", i)
	}
	found := false
	for _, img := range obs.Images {
		for _, a := range img.Aliases {
			found = found || (a == "berth/busybox" && img.Fingerprint == alias.Target && !img.Created.IsZero())
		}
	}
	if !found || obs.At.IsZero() {
		t.Errorf("images %+v, at %s: want berth/busybox at %s with a date", obs.Images, obs.At, alias.Target)
	}

	if err := sys.StopInstance(ctx, ephName); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, _, err = c.GetInstance(ctx, ephName); err != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !errors.Is(err, lxd.ErrNotFound) {
		t.Errorf("stopped ephemeral replica: %v, want it gone", err)
	}
}

// TestSystemOnlyReady: a system-only replica on the test bridge is ready
// once its declared port accepts connections, without Docker; before
// that, WaitReady fails naming the port, and Observe finds it closed.
func TestSystemOnlyReady(t *testing.T) {
	c := realLXD(t)
	ctx := context.Background()
	var network map[string]any
	if err := c.RawQuery(ctx, "GET", "/1.0/networks/berthbr0", nil, "", &network); err != nil {
		testlxd.SkipUnlessUsable(t, errors.New("no bridge berthbr0 (testenv.sh up creates it): "+err.Error()))
	}
	const owner = "berth-it-sysonly"
	sys := New(c, owner, engine.Options{})
	sys.StopTimeout = time.Second
	defer sys.Close()
	app := systemOnlyApp("berth-it-sysonly", "berth-test")
	app.Spec.System.Ports = []spec.Port{{Name: "http", Port: 8080, Protocol: spec.ProtocolTCP}}
	app.Spec.Update.HealthTimeout = spec.Duration(3 * time.Second)
	name := createReplica(t, sys, app)
	sys.SetPorts(map[string][]spec.Port{app.Metadata.Name: app.Spec.System.Ports})

	// Wait for the DHCP lease first: without an address, WaitReady leaves
	// the ports unchecked once the short timeout below has passed.
	for i := 0; ; i++ {
		st, err := c.GetInstanceState(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.GlobalIPv4()) > 0 {
			break
		}
		if i == 300 {
			t.Fatalf("%s got no address on the bridge", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
	execs := sys.Requests().Execs
	err := sys.WaitReady(ctx, name, app)
	var nr *engine.NotReadyError
	if !errors.As(err, &nr) || !strings.Contains(err.Error(), "port 8080/tcp closed on ") {
		t.Fatalf("nothing listening: %v, want port 8080/tcp closed", err)
	}
	observe := func() plan.Instance {
		t.Helper()
		return observeInstance(ctx, t, sys, name)
	}
	inst := observe()
	if addr, err := netip.ParseAddr(inst.Address()); err != nil || !testBridge.Contains(addr) {
		t.Fatalf("address %q: want one on %s", inst.Address(), testBridge)
	}
	if len(inst.ClosedPorts) != 1 || inst.DockerError != "" || inst.Container != nil {
		t.Errorf("closed port observed: %+v", inst)
	}
	if n := sys.Requests().Execs - execs; n != 0 {
		t.Errorf("%d execs (Docker tunnels?) for a system-only replica", n)
	}

	// busybox httpd puts itself in the background.
	_ = inInstance(t, c, name, "httpd", "-p", "8080", "-h", "/tmp")
	app.Spec.Update.HealthTimeout = spec.Duration(time.Minute)
	if err := sys.WaitReady(ctx, name, app); err != nil {
		t.Fatalf("httpd on 8080: %v", err)
	}
	if inst := observe(); inst.ClosedPorts != nil || inst.PortsUnchecked != "" {
		t.Errorf("open port observed: closed %v, unchecked %q", inst.ClosedPorts, inst.PortsUnchecked)
	}

	// Stopped: not ready, at once.
	if err := sys.StopInstance(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := sys.WaitReady(ctx, name, app); !errors.As(err, &nr) || !strings.Contains(err.Error(), "instance is Stopped") {
		t.Errorf("stopped: %v", err)
	}
}

// TestProvisionLeavesNoProcessBehind: a provision runs in a session of its
// own, and whatever of it does not end by itself is stopped, as ps in the
// instance shows: a timed-out command and the processes it started; an
// earlier attempt whose client went away (berth killed: LXD kills only
// the exec's own process); and a process left in the background holding
// the output of a command that exited 0, which is reported as such, not
// as a timeout. A daemon started with its output redirected is left
// alone, by that provision and by the next.
func TestProvisionLeavesNoProcessBehind(t *testing.T) {
	c := realLXD(t)
	ctx := context.Background()
	const owner = "berth-it-provkill"
	sys := New(c, owner, engine.Options{})
	sys.StopTimeout = time.Second
	defer sys.Close()
	name := createReplica(t, sys, systemOnlyApp("berth-it-provkill"))
	// running lists the processes whose command line ends in cmd (ps in
	// the instance, not berth's word for it), but for provisionScript's
	// own, whose arguments end in the command.
	running := func(cmd string) []string {
		t.Helper()
		var found []string
		for _, l := range strings.Split(inInstance(t, c, name, "ps", "-o", "pid,pgid,stat,args"), "\n") {
			if strings.HasSuffix(strings.TrimSpace(l), cmd) && !strings.Contains(l, " Z ") && !strings.Contains(l, "berth-provision") {
				found = append(found, strings.TrimSpace(l))
			}
		}
		return found
	}
	provision := func(run []string, timeout time.Duration) (*ProvisionError, error) {
		t.Helper()
		err := sys.Provision(ctx, name, &spec.Provision{Run: run, Timeout: spec.Duration(timeout)})
		var pe *ProvisionError
		errors.As(err, &pe)
		return pe, err
	}

	// A timeout stops the command and what it started.
	pe, err := provision([]string{"/bin/sh", "-c", "echo begun; sleep 1000; echo never"}, 3*time.Second)
	if pe == nil || !strings.Contains(pe.Reason, "timed out after 3s running [/bin/sh -c echo begun; sleep 1000; echo never] (it and the processes it started were stopped)") || pe.Output != "begun" {
		t.Fatalf("a provision past its timeout: %v", err)
	}
	if left := running("sleep 1000"); len(left) != 0 {
		t.Errorf("left behind by a timed-out provision: %q", left)
	}

	// An attempt whose client went away, as when berth is killed: the
	// exec's own process dies, its session does not. The next attempt
	// stops it before it runs.
	ectx, cancel := context.WithCancel(ctx)
	killed := make(chan error, 1)
	go func() {
		_, err := c.Exec(ectx, name, lxd.ExecRequest{Command: []string{"/bin/sh", "-c", provisionScript, "berth-provision", provisionFuncs, newTry(), "sh", "-c", "sleep 1000"}})
		killed <- err
	}()
	for len(running("sleep 1000")) == 0 {
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	<-killed
	if len(running("sleep 1000")) == 0 {
		t.Fatal("LXD stopped the whole session of an exec whose client went away: this test no longer shows anything")
	}
	if _, err := provision([]string{"true"}, 0); err != nil {
		t.Fatal(err)
	}
	if left := running("sleep 1000"); len(left) != 0 {
		t.Errorf("an earlier attempt still runs after the next one: %q", left)
	}

	// Exited 0, but a background process holds the output: said so, and
	// the process is stopped.
	pe, err = provision([]string{"sh", "-c", "sleep 1000 & echo started"}, time.Minute)
	if pe == nil || !strings.Contains(pe.Reason, "[sh -c sleep 1000 & echo started] exited with code 0, but a process it left in the background kept its output open") ||
		!strings.Contains(pe.Reason, ">/var/log/") || strings.Contains(pe.Reason, "timed out") || pe.Output != "started" {
		t.Fatalf("a provision whose background process holds its output: %v", err)
	}
	if left := running("sleep 1000"); len(left) != 0 {
		t.Errorf("the background process of a provision reported as holding its output: %q", left)
	}

	// A daemon started as the README says stays, also through the next
	// provision.
	if _, err := provision([]string{"sh", "-c", "sleep 1001 </dev/null >/dev/null 2>&1 &"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := provision([]string{"true"}, 0); err != nil {
		t.Fatal(err)
	}
	if daemons := running("sleep 1001"); len(daemons) != 1 {
		t.Errorf("a daemon started with its output redirected: %q, want it running", daemons)
	}
}
