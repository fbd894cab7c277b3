package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
)

// berth on the 3-member cluster of testenv.sh, over HTTPS with the client
// certificate: `make test` runs these with `cluster env` exported, so the
// CLI reads BERTH_LXD and the rest as a user's shell would.

// clusterSvc is a system-only app on the busybox image whose provision
// starts httpd on 8080, serving the instance's hostname.
func clusterSvc(replicas int, placement string) string {
	return systemOnlySpec("svc", replicas, placement)
}

// clusterWeb is web with the nested-Docker image on the cluster, where a
// replica may take longer to come up.
func clusterWeb(image string) string {
	return strings.Replace(webSpec(3, image), "healthTimeout: 40s", "healthTimeout: 90s", 1)
}

// clusterRun is one test on the cluster, in an LXD project of its own:
// instance names are cluster-wide, so a project keeps tests (and what a
// killed run left) from clashing; `cluster up` sweeps leftover ones.
type clusterRun struct {
	t       *testing.T
	env     *testlxd.ClusterEnv
	c       *lxd.Client // in the project
	project string
	owner   string
	repo    *repo
}

func newClusterRun(t *testing.T) *clusterRun {
	env := testlxd.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := lxd.Connect(ctx, lxd.Config{URL: env.URL, ClientCert: env.Cert, ClientKey: env.Key, ServerCert: env.ServerCert, UserAgent: "berth-test"})
	if err != nil {
		t.Fatalf("connect to the cluster: %v", err)
	}
	// Every member Online first: a member another test lost and brought
	// back may still be rejoining, and placement spreads over online ones.
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(2 * time.Second) {
		members, err := c.ListClusterMembers(context.Background())
		online := 0
		for _, m := range members {
			if m.Status == "Online" {
				online++
			}
		}
		if err == nil && online == len(env.Members) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster's members are not all Online: %+v, %v", members, err)
		}
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	project := "berth-cl-" + hex.EncodeToString(b)
	err = c.RawQuery(context.Background(), "POST", "/1.0/projects", map[string]any{
		"name":   project,
		"config": map[string]string{"features.images": "false", "features.profiles": "false", "features.storage.volumes": "false"},
	}, "", nil)
	if err != nil {
		t.Fatalf("create project %s: %v", project, err)
	}
	pc, err := lxd.Connect(context.Background(), lxd.Config{URL: env.URL, ClientCert: env.Cert, ClientKey: env.Key, ServerCert: env.ServerCert, Project: project, UserAgent: "berth-test"})
	if err != nil {
		t.Fatalf("connect to project %s: %v", project, err)
	}
	r := &clusterRun{t: t, env: env, c: pc, project: project, owner: "cl-" + hex.EncodeToString(b), repo: newRepo(t)}
	t.Cleanup(func() {
		r.cleanup()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.RawQuery(ctx, "DELETE", "/1.0/projects/"+project, nil, "", nil); err != nil {
			t.Errorf("cleanup: delete project %s: %v", project, err)
		}
		c.Close()
	})
	return r
}

// cleanup deletes the test's instances (every member must be back: a
// test that stops one registers its restart after this, so it runs first).
func (r *clusterRun) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	defer r.c.Close()
	insts, err := r.c.ListInstances(ctx, map[string]string{"config." + ownership.KeyOwner: r.owner})
	if err != nil {
		r.t.Errorf("cleanup: list: %v", err)
		return
	}
	for _, i := range insts {
		if err := r.c.DeleteInstance(ctx, i.Name); err != nil && !errors.Is(err, lxd.ErrNotFound) {
			r.t.Errorf("cleanup: delete %s: %v", i.Name, err)
		}
	}
}

func (r *clusterRun) fault(action, member string) {
	r.t.Helper()
	out, err := exec.Command(r.env.Testenv, "cluster", action, member).CombinedOutput()
	if err != nil {
		r.t.Fatalf("testenv.sh cluster %s %s: %v\n%s", action, member, err, out)
	}
}

func (r *clusterRun) commit(file, content, msg string) {
	r.t.Helper()
	r.repo.write("apps/"+file, content)
	r.repo.commit(msg)
}

func (r *clusterRun) berth(args ...string) (int, string) {
	r.t.Helper()
	code, out, errOut := berth(r.t, append([]string{"--project", r.project, "--owner", r.owner}, args...)...)
	return code, out + errOut
}

func (r *clusterRun) apply() string {
	r.t.Helper()
	code, out := r.berth("apply", "--yes", "--repo", r.repo.dir, "--dir", "apps")
	if code != 0 {
		r.t.Fatalf("apply: exit %d\n%s", code, out)
	}
	return out
}

// placement is each of app's instances' member, by name, as LXD says;
// it fails on a name seen twice.
func (r *clusterRun) placement(app string) map[string]string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	insts, err := r.c.ListInstanceRecords(ctx)
	if err != nil {
		r.t.Fatalf("list: %v", err)
	}
	out := map[string]string{}
	for _, i := range insts {
		if !strings.HasPrefix(i.Name, app+"-") || (i.Config[ownership.KeyOwner] != r.owner && len(i.Config) > 0) {
			continue
		}
		if _, dup := out[i.Name]; dup {
			r.t.Errorf("instance name %s listed twice", i.Name)
		}
		out[i.Name] = i.Location
	}
	return out
}

func perMemberCount(p map[string]string) map[string]int {
	out := map[string]int{}
	for _, m := range p {
		out[m]++
	}
	return out
}

// serves checks that instance answers its hostname on 8080 from the host.
func (r *clusterRun) serves(name string) {
	r.t.Helper()
	addr := netWaitAddr(r.t, r.c, name, time.Minute)
	if got := strings.TrimSpace(netHTTPGet(r.t, "http://"+addr+":8080/", 30*time.Second)); got != name {
		r.t.Errorf("%s at %s serves %q", name, addr, got)
	}
}

func TestClusterPlacementScaleAndRestrict(t *testing.T) {
	r := newClusterRun(t)
	r.commit("svc.yaml", clusterSvc(3, ""), "svc: 3")
	code, out := r.berth("plan", "--repo", r.repo.dir, "--dir", "apps")
	if code != 2 || strings.Count(out, "  on m") != 3 {
		t.Fatalf("the plan does not say where each replica goes: exit %d\n%s", code, out)
	}
	r.apply()
	three := r.placement("svc")
	if n := perMemberCount(three); len(three) != 3 || len(n) != 3 {
		t.Fatalf("3 replicas on 3 members: %v", three)
	}
	for name := range three {
		r.serves(name)
	}

	t.Log("scale to 5: the new ones balance, the placed ones stay")
	r.commit("svc.yaml", clusterSvc(5, ""), "svc: 5")
	r.apply()
	five := r.placement("svc")
	n := perMemberCount(five)
	if len(five) != 5 || len(n) != 3 || max(n["m1"], n["m2"], n["m3"])-min(n["m1"], n["m2"], n["m3"]) > 1 {
		t.Errorf("5 replicas, balanced: %v", five)
	}
	for name, m := range three {
		if five[name] != m {
			t.Errorf("%s moved from %s to %s on a scale-up", name, m, five[name])
		}
	}

	t.Log("members: [m1] moves every replica there, one at a time")
	r.commit("svc.yaml", clusterSvc(5, "    placement: {members: [m1]}\n"), "svc: m1 only")
	out = r.apply()
	if c := maxConcurrent(out, "recreate"); c > 1 {
		t.Errorf("%d replicas were moved at once, maxUnavailable is 1", c)
	}
	for name, m := range r.placement("svc") {
		if m != "m1" {
			t.Errorf("%s is on %s, the placement allows m1 only", name, m)
		}
	}
	if code, out := r.berth("plan", "--repo", r.repo.dir, "--dir", "apps"); code != 0 {
		t.Errorf("plan after the move: exit %d\n%s", code, out)
	}
}

func TestClusterRollingImageUpdate(t *testing.T) {
	r := newClusterRun(t)
	r.commit("web.yaml", clusterWeb("hello:1"), "web: hello:1")
	r.apply()
	if n := perMemberCount(r.placement("web")); len(n) != 3 {
		t.Fatalf("web spread: %v", r.placement("web"))
	}
	r.commit("web.yaml", clusterWeb("hello:2"), "web: hello:2")
	out := r.apply()
	if c := maxConcurrent(out, "replace-container"); c != 1 {
		t.Errorf("replicas replaced at once: %d, want 1\n%s", c, out)
	}
	// What Docker runs, asked through the one API endpoint (m1), LXD
	// forwarding each exec to the replica's member.
	for name := range r.placement("web") {
		code, ps := netExec(t, r.c, name, "docker", "ps", "--format", "{{.Image}} {{.Status}}")
		if code != 0 || !strings.Contains(ps, "berth/hello:2") || strings.Contains(ps, "hello:1") {
			t.Errorf("%s runs: %q", name, ps)
		}
	}
}

func TestClusterLostMember(t *testing.T) {
	r := newClusterRun(t)
	r.commit("svc.yaml", clusterSvc(3, ""), "svc: 3")
	r.apply()
	before := r.placement("svc")
	var onLost string
	var survivors []string
	for name, m := range before {
		if m == "m3" {
			onLost = name
		} else {
			survivors = append(survivors, name)
		}
	}
	if onLost == "" {
		t.Fatalf("no replica on m3: %v", before)
	}
	// Registered after the instances' cleanup, so it runs before it.
	t.Cleanup(func() { r.fault("start", "m3") })
	r.fault("kill", "m3")

	// LXD says the member is Offline after cluster.offline_threshold
	// (20s); until then its instances are in Error.
	var status string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(3 * time.Second) {
		_, status = r.berth("status", "--repo", r.repo.dir, "--dir", "apps")
		if strings.Contains(status, "unreachable (member m3 offline)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never said which replica is unreachable:\n%s", status)
		}
	}
	if !strings.Contains(status, onLost) || !strings.Contains(status, "Degraded") {
		t.Errorf("status with m3 lost:\n%s", status)
	}
	for _, name := range survivors {
		r.serves(name)
	}
	// A run while the member is away changes nothing and creates no
	// second instance of the lost replica's name.
	code, out := r.berth("apply", "--yes", "--repo", r.repo.dir, "--dir", "apps")
	if strings.Contains(out, "create") || strings.Contains(out, "recreate") {
		t.Errorf("apply with m3 lost (exit %d) planned a create:\n%s", code, out)
	}

	r.fault("start", "m3")
	r.apply()
	after := r.placement("svc")
	names := make([]string, 0, len(after))
	for n := range after {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"svc-0", "svc-1", "svc-2"}) || after[onLost] != "m3" {
		t.Errorf("after m3 came back: %v", after)
	}
	if code, out := r.berth("plan", "--repo", r.repo.dir, "--dir", "apps"); code != 0 {
		t.Errorf("plan after m3 came back: exit %d\n%s", code, out)
	}
}

// With the members' URLs given as a list (--lxd a,b,c), berth works on
// when the member it talks to is lost: status and apply answer through
// another member, while berth given that member alone cannot reach LXD.
func TestClusterEndpointsOutliveTheMemberInUse(t *testing.T) {
	r := newClusterRun(t)
	list := strings.Join(r.env.URLs, ",")
	r.commit("svc.yaml", clusterSvc(3, ""), "svc: 3")
	r.apply()
	before := r.placement("svc")
	// Registered after the instances' cleanup, so it runs before it.
	t.Cleanup(func() { r.fault("start", "m1") })
	r.fault("kill", "m1")

	if code, out := r.berth("--lxd", r.env.URLs[0], "status", "--repo", r.repo.dir, "--dir", "apps"); code == 0 || !strings.Contains(out, "not reachable") {
		t.Errorf("status through the lost member alone: exit %d\n%s", code, out)
	}
	var status string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(3 * time.Second) {
		_, status = r.berth("--lxd", list, "status", "--repo", r.repo.dir, "--dir", "apps")
		if strings.Contains(status, "unreachable (member m1 offline)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status through the list never saw m1 offline:\n%s", status)
		}
	}
	for name, m := range before {
		if m != "m1" && !strings.Contains(status, name) {
			t.Errorf("status through the list does not show %s:\n%s", name, status)
		}
	}
	for _, cmd := range [][]string{{"plan"}, {"apply", "--yes"}} {
		code, out := r.berth(append(append([]string{"--lxd", list}, cmd...), "--repo", r.repo.dir, "--dir", "apps")...)
		if strings.Contains(out, "create") || strings.Contains(out, "not reachable") || !strings.Contains(out, "unreachable (member m1 offline)") {
			t.Errorf("%s through the list with m1 lost (exit %d):\n%s", cmd[0], code, out)
		}
	}
}

// placement.replaceUnreachable counts from the first time an apply saw the
// member lost, also in a later process: a plan run after D by a new
// process plans the stand-in, which it could not if the time were memory.
func TestClusterStandInScheduleOutlivesTheProcess(t *testing.T) {
	r := newClusterRun(t)
	const d = time.Minute
	r.commit("svc.yaml", clusterSvc(3, "    placement:\n      replaceUnreachable: 1m\n"), "svc: 3, stand-ins after 1m")
	r.apply()
	// Registered after the instances' cleanup, so it runs before it.
	t.Cleanup(func() { r.fault("start", "m3") })
	r.fault("kill", "m3")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(3 * time.Second) {
		_, status := r.berth("status", "--repo", r.repo.dir, "--dir", "apps")
		if strings.Contains(status, "unreachable (member m3 offline)") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never said m3 is offline:\n%s", status)
		}
	}
	seen := time.Now()
	if _, out := r.berth("apply", "--yes", "--repo", r.repo.dir, "--dir", "apps"); strings.Contains(out, "create") {
		t.Fatalf("apply right after m3 was lost built a stand-in:\n%s", out)
	}
	srv, _, err := r.c.GetServer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	key := ownership.MembersKey(r.owner, r.project)
	if v, _ := srv.Config[key].(string); !strings.HasPrefix(v, "m3=") {
		t.Fatalf("LXD's %s = %q; want since when m3 is lost", key, v)
	}
	time.Sleep(time.Until(seen.Add(d + 5*time.Second)))
	code, out := r.berth("plan", "--repo", r.repo.dir, "--dir", "apps")
	// Exit 3, not 2: the lost replica itself still blocks convergence.
	if code == 0 || !strings.Contains(out, "create") || !strings.Contains(out, "replaceUnreachable") {
		t.Errorf("a new process %s after m3 was lost does not plan its stand-in (exit %d):\n%s", d, code, out)
	}
}

// update.maxUnavailable: 25% of 8 replicas takes 2 down at a time, as
// LXD's event stream shows: a replica is down from its stop (or delete) to
// the start of its new instance.
func TestClusterPercentMaxUnavailable(t *testing.T) {
	r := newClusterRun(t)
	spec := func(cloudInit string) string {
		s := strings.Replace(clusterSvc(8, cloudInit), "maxUnavailable: 1", "maxUnavailable: 25%", 1)
		if !strings.Contains(s, "maxUnavailable: 25%") {
			t.Fatal("the spec has no maxUnavailable to change")
		}
		return s
	}
	r.commit("svc.yaml", spec(""), "svc: 8, 25% at a time")
	r.apply()

	events := recordEvents(t, r.c)
	r.commit("svc.yaml", spec("    cloudInit: |\n      #cloud-config\n      hostname: x\n"), "svc: a cloud-init change recreates every replica")
	out := r.apply()
	if n := strings.Count(out, "recreate"); n < 8 {
		t.Fatalf("want 8 recreates:\n%s", out)
	}
	down, most := map[string]bool{}, 0
	for _, e := range events() {
		name := e.Instance()
		if !strings.HasPrefix(name, "svc-") {
			continue
		}
		switch e.Metadata.Action {
		case "instance-stopped", "instance-deleted":
			down[name] = true
		case "instance-started":
			delete(down, name)
		}
		most = max(most, len(down))
	}
	if most != 2 {
		t.Errorf("at most %d replicas were down at once; 25%% of 8 is 2", most)
	}
}

// recordEvents subscribes to c's lifecycle events until the test ends and
// returns what has come so far.
func recordEvents(t *testing.T, c *lxd.Client) func() []lxd.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var mu sync.Mutex
	var events []lxd.Event
	subscribed := make(chan struct{})
	go func() {
		_ = c.Events(ctx, []string{"lifecycle"}, func() { close(subscribed) }, func(e lxd.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})
	}()
	<-subscribed
	return func() []lxd.Event {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}
}
