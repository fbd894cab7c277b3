package engine

// Integration tests on real nested Docker: one LXD instance from the test
// image berth/debian-docker (profiles default + berth-test) shared by the
// whole package, reached through the LXD exec tunnel. They skip loudly when
// LXD or the test environment is missing or with -short, and fail instead
// when LXD is required (CI, BERTH_REQUIRE_LXD): see internal/testlxd.
// `testenv/testenv.sh up` builds the environment.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/ownership"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/spec"
)

const (
	itImage   = "berth/debian-docker"
	itProfile = "berth-test"
	itHello1  = "127.0.0.1:5000/berth/hello:1"
	itHello2  = "127.0.0.1:5000/berth/hello:2"
	itBroken  = "127.0.0.1:5000/berth/broken:1"
	itDigests = "/var/lib/berth-testenv/images.txt"
)

type itEnv struct {
	lxc      *lxd.Client
	instance string
	m        *Manager // shared; tests that count execs make their own
	digests  map[string]string
}

var (
	itOnce    sync.Once
	it        *itEnv
	itSkip    string // why the environment is missing
	itErr     error  // setup failed although the environment is there
	itCleanMu sync.Mutex
)

func TestMain(m *testing.M) {
	// Delete the instance on Ctrl-C too, not only after the run.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		itCleanup()
		os.Exit(1)
	}()
	code := m.Run()
	itCleanup()
	os.Exit(code)
}

func itCleanup() {
	itCleanMu.Lock()
	defer itCleanMu.Unlock()
	if it == nil || it.instance == "" {
		return
	}
	it.m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := it.lxc.DeleteInstance(ctx, it.instance); err != nil {
		fmt.Fprintf(os.Stderr, "engine tests: deleting %s: %v\n", it.instance, err)
	}
	it.instance = ""
}

// integration returns the shared environment, creating the instance on
// first use; without it the test skips or fails as testlxd decides.
func integration(t testing.TB) *itEnv {
	t.Helper()
	testlxd.Short(t)
	itOnce.Do(itSetup)
	if itSkip != "" {
		testlxd.SkipUnlessUsable(t, fmt.Errorf("engine integration environment: %s", itSkip))
	}
	if itErr != nil {
		t.Fatalf("integration setup: %v", itErr)
	}
	return it
}

func itSetup() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := os.Stat(lxd.DefaultSocketPath()); err != nil {
		itSkip = "no LXD socket: " + err.Error()
		return
	}
	c, err := lxd.Connect(ctx, lxd.Config{})
	if err != nil {
		itSkip = "cannot connect to LXD: " + err.Error()
		return
	}
	if _, _, err := c.GetImageAlias(ctx, itImage); err != nil {
		itSkip = "no LXD image " + itImage + ": " + err.Error()
		return
	}
	if _, _, err := c.GetProfile(ctx, itProfile); err != nil {
		itSkip = "no LXD profile " + itProfile + ": " + err.Error()
		return
	}
	if resp, err := http.Get("http://127.0.0.1:5000/v2/"); err != nil {
		itSkip = "no registry on 127.0.0.1:5000: " + err.Error()
		return
	} else {
		resp.Body.Close()
	}
	digests, err := readDigests(itDigests)
	if err != nil {
		itSkip = err.Error()
		return
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := "berth-it-engine-" + hex.EncodeToString(rnd[:])
	env := &itEnv{lxc: c, digests: digests, m: New(NewLXDDialer(c), Options{PollInterval: 200 * time.Millisecond, Settle: time.Second, StopTimeout: time.Second})}
	itCleanMu.Lock()
	it = env
	itCleanMu.Unlock()
	if err := c.CreateInstance(ctx, lxd.InstancesPost{
		Name:     name,
		Source:   lxd.ImageSource{Alias: itImage},
		Profiles: []string{"default", itProfile},
	}); err != nil {
		itErr = fmt.Errorf("create %s: %w", name, err)
		return
	}
	env.instance = name
	if err := c.StartInstance(ctx, name); err != nil {
		itErr = fmt.Errorf("start %s: %w", name, err)
		return
	}
	if err := env.m.WaitDocker(ctx, name, time.Minute); err != nil {
		itErr = err
	}
}

func readDigests(file string) (map[string]string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("image digests: %w", err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 {
			out[f[0]] = f[1]
		}
	}
	for _, ref := range []string{itHello1, itHello2} {
		if out[ref] == "" {
			return nil, fmt.Errorf("%s has no digest for %s", file, ref)
		}
	}
	return out, nil
}

// fetch GETs a page on the instance's loopback from the instance itself
// (bash's /dev/tcp: the test image has no wget or curl), which is where
// the host-network app container listens.
func (e *itEnv) fetch(t *testing.T, port int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	script := fmt.Sprintf(`exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' >&3 && cat <&3`, port)
	var out, errb bytes.Buffer
	code, err := e.lxc.Exec(ctx, e.instance, lxd.ExecRequest{Command: []string{"bash", "-c", script}, Stdout: &out, Stderr: &errb})
	if err != nil || code != 0 {
		t.Fatalf("fetch :%d in %s: code %d, %v, %s", port, e.instance, code, err, errb.String())
	}
	return out.String()
}

func collect(events *[]Event) func(Event) {
	var mu sync.Mutex
	return func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		*events = append(*events, e)
	}
}

func steps(events []Event) string {
	var s []string
	for _, e := range events {
		s = append(s, e.Step)
		if e.Err != nil {
			s[len(s)-1] += "!"
		}
	}
	return strings.Join(s, ",")
}

func TestITHelloDeployReplaceRestart(t *testing.T) {
	e := integration(t)
	ctx := context.Background()
	d1 := Desired{App: "hello", Slot: 0, Revision: "rev1", Spec: spec.Container{Image: itHello1}}

	var ev []Event
	if err := e.m.Ensure(ctx, e.instance, d1, collect(&ev)); err != nil {
		t.Fatalf("Ensure hello:1: %v (events %s)", err, steps(ev))
	}
	if got := steps(ev); got != "pull,create,start" {
		t.Errorf("steps = %s", got)
	}
	for _, x := range ev {
		t.Logf("step %-10s %8s %s", x.Step, x.Duration.Round(time.Millisecond), x.Detail)
	}
	if err := e.m.WaitReady(ctx, e.instance, "hello", 30*time.Second); err != nil {
		t.Fatalf("WaitReady hello:1: %v", err)
	}
	if page := e.fetch(t, 8080); !strings.Contains(page, "hello from berth/hello:1") {
		t.Fatalf("page = %q", page)
	}
	obs, err := e.m.Observe(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := obs.Container("hello")
	if !ok || c.Hash() != d1.Spec.Hash() || c.Revision() != "rev1" || c.Labels[ownership.LabelSlot] != "0" ||
		c.State != "running" || c.Health != HealthHealthy || c.Image != itHello1 {
		t.Fatalf("observed %+v", obs)
	}
	if obs.APIVersion != "1.41" {
		t.Errorf("api %s", obs.APIVersion)
	}

	// Same spec, new revision: nothing to do.
	ev = nil
	d1.Revision = "rev1b"
	if err := e.m.Ensure(ctx, e.instance, d1, collect(&ev)); err != nil || len(ev) != 0 {
		t.Fatalf("idempotent Ensure: %v, steps %s", err, steps(ev))
	}

	// Replace with :2.
	d2 := Desired{App: "hello", Slot: 0, Revision: "rev2", Spec: spec.Container{Image: itHello2}}
	ev = nil
	if err := e.m.Ensure(ctx, e.instance, d2, collect(&ev)); err != nil {
		t.Fatalf("Ensure hello:2: %v (events %s)", err, steps(ev))
	}
	// The new container is created before the old one goes: a spec Docker
	// refuses leaves the old one serving.
	if got := steps(ev); got != "pull,create,stop-old,remove-old,start" {
		t.Errorf("steps = %s", got)
	}
	if err := e.m.WaitReady(ctx, e.instance, "hello", 30*time.Second); err != nil {
		t.Fatalf("WaitReady hello:2: %v", err)
	}
	if page := e.fetch(t, 8080); !strings.Contains(page, "hello from berth/hello:2") {
		t.Fatalf("page = %q", page)
	}
	obs, err = e.m.Observe(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := obs.Container("hello")
	if c2.Hash() != d2.Spec.Hash() || c2.Hash() == c.Hash() || c2.Revision() != "rev2" || c2.ID == c.ID {
		t.Fatalf("after replace: %+v (before %+v)", c2, c)
	}

	// Stopped behind berth's back: Ensure only starts it.
	cli, _, err := e.m.client(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	if err := cli.ContainerStop(ctx, "hello", container.StopOptions{Timeout: &zero}); err != nil {
		t.Fatal(err)
	}
	ev = nil
	if err := e.m.Ensure(ctx, e.instance, d2, collect(&ev)); err != nil || steps(ev) != "start" {
		t.Fatalf("Ensure stopped: %v, steps %s", err, steps(ev))
	}
	if err := e.m.WaitReady(ctx, e.instance, "hello", 30*time.Second); err != nil {
		t.Fatalf("WaitReady after start: %v", err)
	}
}

func TestITBrokenNotReady(t *testing.T) {
	e := integration(t)
	ctx := context.Background()
	d := Desired{App: "broken", Slot: 0, Revision: "r", Spec: spec.Container{Image: itBroken}}
	if err := e.m.Ensure(ctx, e.instance, d, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.m.Remove(context.Background(), e.instance, "broken"); err != nil {
			t.Errorf("Remove broken: %v", err)
		}
	})
	start := time.Now()
	err := e.m.WaitReady(ctx, e.instance, "broken", 15*time.Second)
	var nr *NotReadyError
	if !errors.As(err, &nr) || nr.Instance != e.instance || !strings.HasPrefix(nr.Reason, "unhealthy") {
		t.Fatalf("WaitReady broken: %v", err)
	}
	t.Logf("broken: %v after %s", err, time.Since(start).Round(time.Millisecond))

	// A container that exits at once. Seen mid-restart its last exit code
	// may already be reset, so "restarting" is a reason too.
	bad := Desired{App: "crash", Spec: spec.Container{Image: itHello1, Command: []string{"/bin/sh", "-c", "exit 3"}}}
	if err := e.m.Ensure(ctx, e.instance, bad, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.m.Remove(context.Background(), e.instance, "crash") })
	err = e.m.WaitReady(ctx, e.instance, "crash", 15*time.Second)
	if !errors.As(err, &nr) || !(strings.Contains(nr.Reason, "exit code 3") || strings.Contains(nr.Reason, "restarting")) {
		t.Fatalf("WaitReady crash: %v", err)
	}
	t.Logf("crash: %v", err)
}

func TestITForeignContainerLeftAlone(t *testing.T) {
	e := integration(t)
	ctx := context.Background()
	cli, _, err := e.m.client(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	// Make sure the image is there, then create containers without labels:
	// one with an unrelated name, one squatting on an app's name.
	if err := e.m.Ensure(ctx, e.instance, Desired{App: "hello", Spec: spec.Container{Image: itHello1}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"intruder", "squatter"} {
		if _, err := cli.ContainerCreate(ctx, &container.Config{Image: itHello1, Cmd: []string{"sleep", "600"}}, nil, nil, nil, name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cli.ContainerRemove(context.Background(), name, container.RemoveOptions{Force: true})
		})
	}
	obs, err := e.m.Observe(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(obs.Foreign, ","), "intruder") || !strings.Contains(strings.Join(obs.Foreign, ","), "squatter") {
		t.Errorf("foreign = %v", obs.Foreign)
	}
	for _, c := range obs.Containers {
		if c.Name == "intruder" || c.Name == "squatter" {
			t.Errorf("foreign container reported as berth's: %+v", c)
		}
	}
	err = e.m.Ensure(ctx, e.instance, Desired{App: "squatter", Spec: spec.Container{Image: itHello1}}, nil)
	if !errors.Is(err, ErrNameConflict) {
		t.Fatalf("Ensure over a foreign name: %v", err)
	}
	t.Logf("name clash: %v", err)
	if err := e.m.Remove(ctx, e.instance, "squatter"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Remove of a foreign name: %v", err)
	}
	if err := e.m.Remove(ctx, e.instance, "intruder"); !errors.Is(err, ErrNameConflict) {
		t.Errorf("Remove of a foreign name: %v", err)
	}
	for _, name := range []string{"intruder", "squatter"} {
		if _, err := cli.ContainerInspect(ctx, name); err != nil {
			t.Errorf("%s was touched: %v", name, err)
		}
	}
}

func TestITPullErrorsAndDigests(t *testing.T) {
	e := integration(t)
	ctx := context.Background()

	var ev []Event
	err := e.m.Ensure(ctx, e.instance, Desired{App: "nope", Spec: spec.Container{Image: "127.0.0.1:5000/berth/nope:1"}}, collect(&ev))
	if err == nil || !strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "berth/nope") || steps(ev) != "pull!" {
		t.Fatalf("missing image: %v (steps %s)", err, steps(ev))
	}
	t.Logf("missing image: %v", err)

	repo := strings.TrimSuffix(itHello1, ":1")
	wrong := itHello1 + "@" + e.digests[itHello2]
	err = e.m.Ensure(ctx, e.instance, Desired{App: "pinned", Spec: spec.Container{Image: wrong}}, nil)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("tag and digest disagree: %v", err)
	}
	t.Logf("mismatch: %v", err)

	// The right pin runs (on another port: hello uses 8080 on the same
	// host network), with the spec's own healthcheck and bind mounts whose
	// missing sources Docker creates.
	right := Desired{App: "pinned", Spec: spec.Container{
		Image: itHello1 + "@" + e.digests[itHello1],
		Env:   map[string]string{"PORT": "8081"},
		Healthcheck: &spec.Healthcheck{
			Test:     []string{"CMD", "wget", "-qO-", "http://127.0.0.1:8081/"},
			Interval: spec.Duration(500 * time.Millisecond), Timeout: spec.Duration(2 * time.Second), Retries: 2,
		},
		Volumes: []spec.Volume{{Source: "/srv/berth-it/pinned", Target: "/data"}, {Source: "/etc", Target: "/host-etc", ReadOnly: true}},
	}}
	if err := e.m.Ensure(ctx, e.instance, right, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.m.Remove(context.Background(), e.instance, "pinned") })
	if err := e.m.WaitReady(ctx, e.instance, "pinned", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if page := e.fetch(t, 8081); !strings.Contains(page, "hello from berth/hello:1") {
		t.Errorf("page = %q", page)
	}
	obs, err := e.m.Observe(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := obs.Container("pinned"); c.Image != repo+"@"+e.digests[itHello1] || c.Health != HealthHealthy {
		t.Errorf("pinned container: %+v", c)
	}
	cli, _, err := e.m.client(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	insp, err := cli.ContainerInspect(ctx, "pinned")
	if err != nil {
		t.Fatal(err)
	}
	if hc := insp.Config.Healthcheck; hc == nil || hc.Interval != 500*time.Millisecond || hc.Retries != 2 || hc.Test[0] != "CMD" {
		t.Errorf("healthcheck = %+v", insp.Config.Healthcheck)
	}
	var ro, rw bool
	for _, mp := range insp.Mounts {
		ro = ro || (mp.Destination == "/host-etc" && !mp.RW)
		rw = rw || (mp.Destination == "/data" && mp.RW && mp.Source == "/srv/berth-it/pinned")
	}
	if !ro || !rw || insp.HostConfig.NetworkMode != "host" || insp.HostConfig.RestartPolicy.Name != "unless-stopped" {
		t.Errorf("mounts %+v, host config %+v", insp.Mounts, insp.HostConfig)
	}

	// A digest-only pin with PullAlways pulls by digest.
	always := New(NewLXDDialer(e.lxc), Options{PullPolicy: PullAlways, StopTimeout: time.Second})
	defer always.Close()
	ev = nil
	byDigest := Desired{App: "pinned", Spec: spec.Container{Image: repo + "@" + e.digests[itHello2], Env: map[string]string{"PORT": "8081"}}}
	if err := always.Ensure(ctx, e.instance, byDigest, collect(&ev)); err != nil || !strings.HasPrefix(steps(ev), "pull,") {
		t.Fatalf("digest pin: %v, steps %s", err, steps(ev))
	}
}

func TestITInstanceRestartAndExecReuse(t *testing.T) {
	e := integration(t)
	ctx := context.Background()
	m := New(NewLXDDialer(e.lxc), Options{})
	defer m.Close()

	if _, err := m.Observe(ctx, e.instance); err != nil {
		t.Fatal(err)
	}
	first := m.Execs()
	for range 5 {
		if _, err := m.Observe(ctx, e.instance); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.Execs() - first; n > 1 {
		t.Errorf("5 repeated Observes started %d new execs (first took %d)", n, first)
	}
	t.Logf("execs: %d for the first Observe, %d for 5 more", first, m.Execs()-first)

	if err := e.lxc.StopInstance(ctx, e.instance, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	_, err := m.Observe(ctx, e.instance)
	if !errors.Is(err, ErrInstanceNotRunning) {
		t.Fatalf("Observe of a stopped instance: %v", err)
	}
	t.Logf("stopped: %v", err)
	if err := e.lxc.StartInstance(ctx, e.instance); err != nil {
		t.Fatal(err)
	}
	if err := m.WaitDocker(ctx, e.instance, time.Minute); err != nil {
		t.Fatal(err)
	}
	obs, err := m.Observe(ctx, e.instance)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := obs.Container("hello")
	if !ok {
		t.Fatalf("after restart: %+v", obs)
	}
	t.Logf("after instance restart: hello is %s", c.State)
	// The shared manager still holds a client whose tunnels died with the
	// instance: its next call must recover (dead idle connections are
	// dropped by the transport, a fresh exec is started).
	if _, err := e.m.Observe(ctx, e.instance); err != nil {
		t.Fatalf("shared manager after restart: %v", err)
	}
	// Explicit Forget: a fresh client, one more exec.
	before := m.Execs()
	m.Forget(e.instance)
	if _, err := m.Observe(ctx, e.instance); err != nil {
		t.Fatal(err)
	}
	if m.Execs() == before {
		t.Error("Forget did not drop the client")
	}
	// The app comes back by itself (restart policy unless-stopped).
	if err := m.WaitReady(ctx, e.instance, "hello", 30*time.Second); err != nil {
		t.Errorf("hello after instance restart: %v", err)
	}
}

// BenchmarkObserve measures one Observe of one instance: cold (a new
// manager, so a new exec tunnel and version negotiation) and warm (cached
// client, reused connection).
func BenchmarkObserve(b *testing.B) {
	e := integration(b)
	ctx := context.Background()
	// Measure with berth's container present: a list plus one inspect.
	if err := e.m.Ensure(ctx, e.instance, Desired{App: "hello", Spec: spec.Container{Image: itHello1}}, nil); err != nil {
		b.Fatal(err)
	}
	b.Run("cold", func(b *testing.B) {
		var execs int64
		for b.Loop() {
			m := New(NewLXDDialer(e.lxc), Options{})
			if _, err := m.Observe(ctx, e.instance); err != nil {
				b.Fatal(err)
			}
			execs += m.Execs()
			m.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
		b.ReportMetric(float64(execs)/float64(b.N), "execs/op")
	})
	b.Run("warm", func(b *testing.B) {
		m := New(NewLXDDialer(e.lxc), Options{})
		defer m.Close()
		if _, err := m.Observe(ctx, e.instance); err != nil {
			b.Fatal(err)
		}
		start := m.Execs()
		for b.Loop() {
			if _, err := m.Observe(ctx, e.instance); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
		b.ReportMetric(float64(m.Execs()-start)/float64(b.N), "execs/op")
	})
}
