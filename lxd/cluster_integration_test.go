package lxd

// Cluster integration tests, against the 3-member LXD cluster of
// `testenv/testenv.sh cluster up`, over HTTPS with the client certificate
// it made. They read the environment `testenv.sh cluster env` prints
// (`make test-cluster` exports it). Without it they skip, loudly, unless
// the cluster is required (CI, or BERTH_REQUIRE_CLUSTER): then a missing
// or unusable cluster fails them. Their names start with TestCluster, which
// is how `make test` runs them apart from the single-host tests.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/internal/testlxd"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// clusterEnv is the cluster test environment, from `testenv.sh cluster env`.
type clusterEnv struct{ *testlxd.ClusterEnv }

// realCluster returns the cluster test environment with every member
// Online, or skips or fails the test.
func realCluster(tb testing.TB) *clusterEnv {
	tb.Helper()
	e := &clusterEnv{testlxd.Cluster(tb)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := e.connect(ctx, e.URL, "")
	if err != nil {
		testlxd.SkipOrFailCluster(tb, err.Error())
	}
	defer c.Close()
	if !c.Server().Environment.ServerClustered {
		testlxd.SkipOrFailCluster(tb, e.URL+" is not clustered")
	}
	if _, _, err := c.GetImageAlias(ctx, testImage); err != nil {
		testlxd.SkipOrFailCluster(tb, fmt.Sprintf("test image alias %q: %v", testImage, err))
	}
	// A member an earlier test lost and brought back may take a heartbeat
	// or two to be Online in every member's eyes: wait for it, bounded.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		why := ""
		members, err := clusterMembers(ctx, c)
		if err != nil {
			why = err.Error()
		}
		for _, name := range e.Members {
			if m, ok := members[name]; err == nil && (!ok || m.Status != "Online") {
				why = fmt.Sprintf("member %s is not Online: %+v (testenv.sh cluster start %s)", name, m, name)
			}
		}
		if why == "" {
			return e
		}
		if time.Now().After(deadline) {
			testlxd.SkipOrFailCluster(tb, why)
			return e
		}
	}
}

// connect opens a client for url (any member) whose new instances go to
// target ("" lets LXD place them).
func (e *clusterEnv) connect(ctx context.Context, url, target string) (*Client, error) {
	return Connect(ctx, Config{URL: url, ClientCert: e.Cert, ClientKey: e.Key, ServerCert: e.ServerCert, Target: target, UserAgent: "berth-test"})
}

// client is connect for a test: m1's endpoint, new instances on target.
func (e *clusterEnv) client(tb testing.TB, target string) *Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := e.connect(ctx, e.URL, target)
	if err != nil {
		tb.Fatalf("connect to %s: %v", e.URL, err)
	}
	tb.Cleanup(c.Close)
	return c
}

// fault runs `testenv.sh cluster ACTION MEMBER` (kill, start, freeze, thaw).
func (e *clusterEnv) fault(action, member string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.Testenv, "cluster", action, member).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv.sh cluster %s %s: %w: %s", action, member, err, bytes.TrimSpace(out))
	}
	return nil
}

// inject runs fault `do` on member and registers `undo` to run when the
// test ends. Call it after launching the test's instances: cleanups run in
// reverse, so the member is back before its instances are deleted.
func (e *clusterEnv) inject(t *testing.T, do, undo, member string) {
	t.Helper()
	t.Cleanup(func() {
		if err := e.fault(undo, member); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := e.fault(do, member); err != nil {
		t.Fatal(err)
	}
}

// statusInstanceError is the status code (api.Error) of an instance LXD
// cannot reach, e.g. on a lost member. The package has no constant for it
// yet.
const statusInstanceError = 112

// clusterMembers is the cluster's members by name.
func clusterMembers(ctx context.Context, c *Client) (map[string]ClusterMember, error) {
	list, err := c.ListClusterMembers(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster members: %w", err)
	}
	out := make(map[string]ClusterMember, len(list))
	for _, m := range list {
		out[m.ServerName] = m
	}
	return out, nil
}

// clusterLaunch creates and starts a busybox instance on the cluster member
// c targets, on the cluster's shared bridge (profile berth-test), labelled
// with the test's label. It is deleted when the test ends.
func clusterLaunch(tb testing.TB, c *Client, name, label string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tb.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteInstance(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			tb.Errorf("cleanup: delete %s: %v", name, err)
		}
	})
	err := c.CreateInstance(ctx, InstancesPost{
		Name:     name,
		Source:   ImageSource{Alias: testImage},
		Profiles: []string{"default", "berth-test"},
		Config:   map[string]string{"user.berth.test": label},
	})
	if err != nil {
		tb.Fatalf("create %s: %v", name, err)
	}
	if err := c.StartInstance(ctx, name); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
}

// clusterAddress waits for the instance's DHCP address on the shared
// bridge.
func clusterAddress(tb testing.TB, c *Client, name string) string {
	tb.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		st, err := c.GetInstanceState(ctx, name)
		cancel()
		if err == nil {
			if ips := st.GlobalIPv4(); len(ips) > 0 {
				return ips[0]
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s has no IPv4 address on the cluster bridge after 90s (last error: %v)", name, err)
		}
		time.Sleep(time.Second)
	}
}

// clusterExec runs a command and returns its exit code and output.
func clusterExec(ctx context.Context, c *Client, name string, cmd ...string) (int, string, error) {
	var out bytes.Buffer
	code, err := c.Exec(ctx, name, ExecRequest{Command: cmd, Stdout: &out, Stderr: &out})
	return code, strings.TrimSpace(out.String()), err
}

// listByLabel is the whole cluster's instances of one test (named
// berth-cl-<label>-*), in one recursive request, by name. It lists without
// a filter: LXD knows nothing but the name, status (Error) and location of
// an instance on a lost member, so a config filter drops it, on the server
// and in ListInstances.
func listByLabel(ctx context.Context, tb testing.TB, c *Client, label string) map[string]Instance {
	tb.Helper()
	list, err := c.ListInstances(ctx, nil)
	if err != nil {
		tb.Fatalf("list the cluster's instances: %v", err)
	}
	out := map[string]Instance{}
	for _, inst := range list {
		if !strings.HasPrefix(inst.Name, "berth-cl-"+label+"-") {
			continue
		}
		if _, dup := out[inst.Name]; dup {
			tb.Errorf("instance %s listed twice", inst.Name)
		}
		out[inst.Name] = inst
	}
	return out
}

// TestClusterPlacement: instances created with target= land on the
// member asked for; one recursive list shows every member's instances with
// their location; exec through m1 reaches an instance on m3; instances on
// different members share one L2 segment; every member presents the
// certificate pinned for m1.
func TestClusterPlacement(t *testing.T) {
	env := realCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := env.client(t, "")
	label := randSuffix()
	want := map[string]string{} // instance -> member
	for _, m := range env.Members {
		name := "berth-cl-" + label + "-" + m
		clusterLaunch(t, env.client(t, m), name, label)
		want[name] = m
	}

	got := listByLabel(ctx, t, c, label)
	if len(got) != len(want) {
		t.Fatalf("listed %d instances, want %d: %v", len(got), len(want), got)
	}
	for name, member := range want {
		inst := got[name]
		if inst.Location != member || !inst.Running() {
			t.Errorf("%s: location %q status %q, want %q Running", name, inst.Location, inst.Status, member)
		}
		one, _, err := c.GetInstance(ctx, name)
		if err != nil || one.Location != member {
			t.Errorf("get %s: location %v, err %v; want %s", name, one, err, member)
		}
	}

	// m1 is the endpoint; LXD forwards the exec to m3.
	onM3 := "berth-cl-" + label + "-" + env.Members[2]
	code, out, err := clusterExec(ctx, c, onM3, "hostname")
	if err != nil || code != 0 || out != onM3 {
		t.Errorf("exec hostname in %s (on %s) through %s: code %d, output %q, err %v", onM3, env.Members[2], env.URL, code, out, err)
	}

	t.Run("one L2 segment", func(t *testing.T) {
		onM1 := "berth-cl-" + label + "-" + env.Members[0]
		ip := clusterAddress(t, c, onM3)
		clusterAddress(t, c, onM1)
		code, out, err := clusterExec(ctx, c, onM1, "ping", "-c", "1", "-W", "5", ip)
		if err != nil || code != 0 {
			t.Errorf("ping %s (%s on %s) from %s: code %d, err %v: %s", ip, onM3, env.Members[2], onM1, code, err, out)
		}
	})

	t.Run("every member presents the pinned certificate", func(t *testing.T) {
		members, err := clusterMembers(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range env.Members {
			mc, err := env.connect(ctx, members[name].URL, "")
			if err != nil {
				t.Errorf("connect to %s at %s with the pinned cluster certificate: %v", name, members[name].URL, err)
				continue
			}
			if got := mc.Server().Environment.ServerName; got != name {
				t.Errorf("%s answered as %q", members[name].URL, got)
			}
			mc.Close()
		}
	})
}

// lxdCallLimit is far above what LXD takes to fail a call on a lost
// member by itself (10 s, 30 s for a list with a hung member).
const lxdCallLimit = 90 * time.Second

// boundedCall runs one call against the cluster with a deadline of limit,
// and fails the test when the deadline, not LXD or the client, is what
// ended it: a hang. It returns the call's error and logs how long it took.
func boundedCall(t *testing.T, what string, limit time.Duration, call func(ctx context.Context) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	err := call(ctx)
	t.Logf("%s: %v after %s", what, err, time.Since(start).Round(time.Millisecond))
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		t.Errorf("%s: still waiting after %s: a call to the cluster hangs", what, limit)
	}
	return err
}

// execEventually runs a command in an instance on a healthy member while
// another member is lost, and fails the test unless it succeeds (exit 0,
// and the output want unless that is "") within 10 tries. Not always at
// the first: when the lost member held the database leadership, calls
// that need the database fail until the other two elect a new leader
// (seen: exec's websocket refused with 500).
func execEventually(t *testing.T, c *Client, name, want string, cmd ...string) {
	t.Helper()
	var err error
	for try := 1; try <= 10; try++ {
		err = boundedCall(t, fmt.Sprintf("%s in %s, try %d", strings.Join(cmd, " "), name, try), lxdCallLimit, func(ctx context.Context) error {
			code, out, err := clusterExec(ctx, c, name, cmd...)
			if err == nil && (code != 0 || (want != "" && out != want)) {
				err = fmt.Errorf("exit code %d, output %q", code, out)
			}
			return err
		})
		if err == nil {
			return
		}
		time.Sleep(3 * time.Second)
	}
	t.Errorf("%s in %s while a member is lost: %v", strings.Join(cmd, " "), name, err)
}

// TestClusterMemberLoss kills -9 the LXD daemon of one member (m3) and
// checks what berth relies on: the cluster still answers through m1; the
// recursive list still lists the lost member's instances, in status Error
// at their location; calls on them fail on their own, with an error, in
// bounded time; the other members' instances keep running and serving, and
// the lost member's instances too (only their daemon died); LXD reports
// the member Offline. When the member is back, everything is as before,
// with no duplicates.
func TestClusterMemberLoss(t *testing.T) {
	env := realCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := env.client(t, "")
	survivor, lost := env.Members[1], env.Members[2]
	label := randSuffix()
	onSurvivor := "berth-cl-" + label + "-" + survivor
	onLost := "berth-cl-" + label + "-" + lost
	clusterLaunch(t, env.client(t, survivor), onSurvivor, label)
	clusterLaunch(t, env.client(t, lost), onLost, label)
	lostIP := clusterAddress(t, c, onLost)
	clusterAddress(t, c, onSurvivor)
	toLost := env.client(t, lost)
	// Should creating on the lost member succeed after all, that instance
	// is deleted too.
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteInstance(ctx, onLost+"-new"); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup: delete %s-new: %v", onLost, err)
		}
	})

	// Registered after the instances' cleanups, so it runs before them:
	// deleting an instance needs its member.
	env.inject(t, "kill", "start", lost)

	boundedCall(t, "list the cluster's instances", lxdCallLimit, func(ctx context.Context) error {
		got := listByLabel(ctx, t, c, label)
		if inst := got[onLost]; inst.Location != lost || inst.StatusCode != statusInstanceError {
			t.Errorf("%s after its member was lost: location %q, status %q (%d); want %q, Error", onLost, inst.Location, inst.Status, inst.StatusCode, lost)
		}
		if inst := got[onSurvivor]; inst.Location != survivor || !inst.Running() {
			t.Errorf("%s: location %q, status %q; want %q, Running", onSurvivor, inst.Location, inst.Status, survivor)
		}
		return nil
	})
	// What an observer filtering on its ownership keys sees: LXD drops
	// the lost member's instances, config unknown. Logged, not asserted:
	// it is LXD's behaviour, for berth to cope with (not to mistake them
	// for missing ones).
	if filtered, err := c.ListInstances(ctx, map[string]string{"config.user.berth.test": label}); err == nil {
		var names []string
		for _, inst := range filtered {
			names = append(names, inst.Name+" ("+inst.Status+")")
		}
		t.Logf("a list filtered on config.user.berth.test while %s is lost has: %v", lost, names)
	}
	for _, call := range []struct {
		what string
		call func(ctx context.Context) error
	}{
		{"get " + onLost, func(ctx context.Context) error { _, _, err := c.GetInstance(ctx, onLost); return err }},
		{"state of " + onLost, func(ctx context.Context) error { _, err := c.GetInstanceState(ctx, onLost); return err }},
		{"exec in " + onLost, func(ctx context.Context) error { _, _, err := clusterExec(ctx, c, onLost, "true"); return err }},
		{"create on " + lost, func(ctx context.Context) error {
			return toLost.CreateInstance(ctx, InstancesPost{Name: onLost + "-new", Source: ImageSource{Alias: testImage}, Config: map[string]string{"user.berth.test": label}})
		}},
	} {
		if err := boundedCall(t, call.what, lxdCallLimit, call.call); err == nil {
			t.Errorf("%s: no error while %s is lost", call.what, lost)
		}
	}

	// The survivor serves, and reaches the lost member's instance over the
	// network: a dead daemon does not take its instances down.
	execEventually(t, c, onSurvivor, "", "ping", "-c", "1", "-W", "5", lostIP)

	// LXD marks the member Offline once it has missed heartbeats for
	// cluster.offline_threshold (20s by default).
	var offline ClusterMember
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		members, err := clusterMembers(ctx, c)
		if err == nil && members[lost].Status == "Offline" {
			offline = members[lost]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not reported Offline 2 minutes after its daemon was killed: %+v, %v", lost, members[lost], err)
		}
	}
	t.Logf("%s: %s (%s)", lost, offline.Status, offline.Message)
	if err := boundedCall(t, "get "+onLost+" once "+lost+" is Offline", lxdCallLimit, func(ctx context.Context) error {
		_, _, err := c.GetInstance(ctx, onLost)
		return err
	}); err == nil {
		t.Errorf("get %s: no error while %s is Offline", onLost, lost)
	}

	if err := env.fault("start", lost); err != nil {
		t.Fatal(err)
	}
	got := listByLabel(ctx, t, c, label)
	names := make([]string, 0, len(got))
	for name := range got {
		names = append(names, name)
	}
	slices.Sort(names)
	want := []string{onSurvivor, onLost}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("after %s came back the cluster has %v, want exactly %v", lost, names, want)
	}
	if inst := got[onLost]; inst.Location != lost || !inst.Running() {
		t.Errorf("%s after %s came back: location %q, status %q; want %q, Running", onLost, lost, inst.Location, inst.Status, lost)
	}
	if code, out, err := clusterExec(ctx, c, onLost, "hostname"); err != nil || code != 0 || out != onLost {
		t.Errorf("exec in %s after %s came back: code %d, output %q, err %v", onLost, lost, code, out, err)
	}
}

// TestClusterEndpointLoss kills -9 the member berth talks to (m1, also
// the database leader at first): calls through it fail at once as
// ErrUnreachable, naming the address; the cluster still answers through
// another member once the database has a new leader, and lists m1's
// instances in status Error there.
func TestClusterEndpointLoss(t *testing.T) {
	env := realCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	endpoint, other := env.Members[0], env.Members[1]
	c := env.client(t, "")
	members, err := clusterMembers(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	viaOther, err := env.connect(ctx, members[other].URL, "")
	if err != nil {
		t.Fatalf("connect to %s: %v", other, err)
	}
	defer viaOther.Close()
	label := randSuffix()
	onEndpoint := "berth-cl-" + label + "-" + endpoint
	clusterLaunch(t, env.client(t, endpoint), onEndpoint, label)

	env.inject(t, "kill", "start", endpoint)
	err = boundedCall(t, "list through "+endpoint, lxdCallLimit, func(ctx context.Context) error {
		_, err := c.ListInstances(ctx, nil)
		return err
	})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), strings.TrimPrefix(env.URL, "https://")) {
		t.Errorf("list through the lost endpoint: %v; want ErrUnreachable naming %s", err, env.URL)
	}

	// The survivors elect a new database leader; until then a call may
	// fail, but none may hang.
	var got map[string]Instance
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		var list []Instance
		err := boundedCall(t, "list through "+other, lxdCallLimit, func(ctx context.Context) error {
			var err error
			list, err = viaOther.ListInstances(ctx, nil)
			return err
		})
		if err == nil {
			got = map[string]Instance{}
			for _, inst := range list {
				got[inst.Name] = inst
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster does not answer through %s 2 minutes after %s was lost: %v", other, endpoint, err)
		}
	}
	if inst := got[onEndpoint]; inst.Location != endpoint || inst.StatusCode != statusInstanceError {
		t.Errorf("%s through %s: location %q, status %q; want %q, Error", onEndpoint, other, inst.Location, inst.Status, endpoint)
	}
}

// TestClusterMemberHung freezes (SIGSTOP) the daemon of one member (m3):
// unlike a killed one, it accepts connections and never answers, as a
// host behind a network partition would. Calls on the cluster must still
// end on their own: the list lists its instances in status Error (after
// LXD's 30 s per member), calls on them fail (LXD's 10 s, or the client's
// responseTimeout when LXD forwards them and waits), the others serve.
// When it thaws, all is as before.
func TestClusterMemberHung(t *testing.T) {
	env := realCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := env.client(t, "")
	survivor, hung := env.Members[1], env.Members[2]
	label := randSuffix()
	onSurvivor := "berth-cl-" + label + "-" + survivor
	onHung := "berth-cl-" + label + "-" + hung
	clusterLaunch(t, env.client(t, survivor), onSurvivor, label)
	clusterLaunch(t, env.client(t, hung), onHung, label)

	env.inject(t, "freeze", "thaw", hung)
	boundedCall(t, "list the cluster's instances", lxdCallLimit, func(ctx context.Context) error {
		got := listByLabel(ctx, t, c, label)
		if inst := got[onHung]; inst.Location != hung || inst.StatusCode != statusInstanceError {
			t.Errorf("%s while its member hangs: location %q, status %q; want %q, Error", onHung, inst.Location, inst.Status, hung)
		}
		if inst := got[onSurvivor]; !inst.Running() {
			t.Errorf("%s: status %q, want Running", onSurvivor, inst.Status)
		}
		return nil
	})
	// LXD does not always bound this one: when m1 still holds its event
	// connection to the hung member, it forwards the exec and waits for
	// an answer that never comes. The client's own limit on waiting for
	// an answer (responseTimeout) is then what ends it.
	if err := boundedCall(t, "exec in "+onHung, responseTimeout+30*time.Second, func(ctx context.Context) error {
		_, _, err := clusterExec(ctx, c, onHung, "true")
		return err
	}); err == nil {
		t.Errorf("exec in %s: no error while %s hangs", onHung, hung)
	}
	execEventually(t, c, onSurvivor, onSurvivor, "hostname")

	if err := env.fault("thaw", hung); err != nil {
		t.Fatal(err)
	}
	if inst := listByLabel(ctx, t, c, label)[onHung]; !inst.Running() {
		t.Errorf("%s after %s thawed: status %q, want Running", onHung, hung, inst.Status)
	}
}

// TestClusterEndpointListOutlivesAFrozenMember freezes the member first in
// a list of endpoints: it accepts connections and never answers. A client
// of the list connects and lists through the next member, each call
// bounded (the frozen member's TLS handshake gives up after 10 s), and
// says which member it uses; a client of the frozen member alone fails
// within its own bounds.
func TestClusterEndpointListOutlivesAFrozenMember(t *testing.T) {
	env := realCluster(t)
	label := randSuffix()
	onM2 := "berth-cl-" + label + "-" + env.Members[1]
	clusterLaunch(t, env.client(t, env.Members[1]), onM2, label)
	env.inject(t, "freeze", "thaw", env.Members[0])

	list := strings.Join(env.URLs, ",")
	var c *Client
	boundedCall(t, "connect through the list", lxdCallLimit, func(ctx context.Context) error {
		var err error
		c, err = Connect(ctx, Config{URL: list, ClientCert: env.Cert, ClientKey: env.Key, ServerCert: env.ServerCert, UserAgent: "berth-test"})
		return err
	})
	if c == nil {
		t.Fatal("no client")
	}
	defer c.Close()
	if c.Endpoint() == env.URLs[0] {
		t.Errorf("the client uses the frozen member %s", c.Endpoint())
	}
	boundedCall(t, "list through the list", lxdCallLimit, func(ctx context.Context) error {
		if inst := listByLabel(ctx, t, c, label)[onM2]; !inst.Running() {
			t.Errorf("%s through %s: status %q, want Running", onM2, c.Endpoint(), inst.Status)
		}
		return nil
	})
	if err := boundedCall(t, "connect to the frozen member alone", lxdCallLimit, func(ctx context.Context) error {
		_, err := env.connect(ctx, env.URLs[0], "")
		return err
	}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("connect to the frozen member alone: %v; want ErrUnreachable", err)
	}
}

// TestClusterEvents: one event stream, from m1, carries the lifecycle
// events of an instance on m3, with m3 as their location.
func TestClusterEvents(t *testing.T) {
	env := realCluster(t)
	c := env.client(t, "")
	member := env.Members[2]
	name := "berth-cl-" + randSuffix() + "-" + member

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	events := make(chan Event, 64)
	ready := make(chan struct{})
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- c.Events(ctx, []string{"lifecycle"}, func() { close(ready) }, func(ev Event) {
			if ev.Instance() == name {
				select {
				case events <- ev:
				default: // the test has what it needs, or has ended
				}
			}
		})
	}()
	select {
	case <-ready:
	case err := <-streamDone:
		t.Fatalf("subscribe to events on %s: %v", env.URL, err)
	}
	clusterLaunch(t, env.client(t, member), name, "events")

	for {
		select {
		case ev := <-events:
			t.Logf("%s %s at %q", ev.Metadata.Action, ev.Instance(), ev.Location)
			if ev.Metadata.Action != "instance-started" {
				continue
			}
			if ev.Location != member {
				t.Errorf("instance-started of %s: location %q, want %q", name, ev.Location, member)
			}
			return
		case err := <-streamDone:
			t.Fatalf("the event stream ended before %s started: %v", name, err)
		case <-ctx.Done():
			t.Fatalf("no instance-started event for %s (on %s) through %s", name, member, env.URL)
		}
	}
}

// TestClusterDockerTunnel: the nested-Docker image on m3, and its Docker
// API reached through m1 (`docker system dial-stdio` over exec, as berth
// tunnels it); the registry at 127.0.0.1:5000 answers inside it.
func TestClusterDockerTunnel(t *testing.T) {
	env := realCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := env.client(t, "")
	member := env.Members[2]
	name := "berth-cl-" + randSuffix() + "-" + member
	tc := env.client(t, member)
	t.Cleanup(func() {
		ctx, cancel := cleanupCtx()
		defer cancel()
		if err := c.DeleteInstance(ctx, name); err != nil && !errors.Is(err, ErrNotFound) {
			t.Errorf("cleanup: delete %s: %v", name, err)
		}
	})
	if err := tc.CreateInstance(ctx, InstancesPost{Name: name, Source: ImageSource{Alias: "berth/debian-docker"}, Profiles: []string{"default", "berth-test"}}); err != nil {
		t.Fatalf("create %s on %s: %v", name, member, err)
	}
	if err := c.StartInstance(ctx, name); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}

	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.DialExec(ctx, name, []string{"docker", "system", "dial-stdio"}, nil)
		},
	}}
	defer hc.CloseIdleConnections()
	var ping string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		resp, err := hc.Get("http://docker/_ping")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ping = string(body); resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker in %s (on %s) through %s: no answer to /_ping after 2 minutes: %v %q", name, member, env.URL, err, ping)
		}
	}
	if ping != "OK" {
		t.Errorf("docker /_ping through %s: %q, want OK", env.URL, ping)
	}
	code, out, err := clusterExec(ctx, c, name, "docker", "pull", "-q", "127.0.0.1:5000/berth/hello:1")
	if err != nil || code != 0 {
		t.Errorf("docker pull from the registry in %s (on %s): code %d, err %v: %s", name, member, code, err, out)
	}
}
