package main

import (
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
)

// bridgeDNS is where the test network's dnsmasq forwards berth.internal
// (testenv.sh): the daemon of these tests serves DNS there.
const bridgeDNS = testBridgeAddr + ":8053"

// lookupA asks the daemon's DNS for name's A records.
func lookupA(t *testing.T, name string) (addrs []string, rcode int) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	cl := &dns.Client{Timeout: 2 * time.Second}
	in, _, err := cl.Exchange(m, bridgeDNS)
	if err != nil {
		return nil, -1
	}
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return addrs, in.Rcode
}

// execIn runs a shell command in an instance and returns its output.
func execIn(t *testing.T, c *lxd.Client, name, script string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, errOut, code, err := execRetry(ctx, c, name, "sh", "-c", script)
	if err != nil {
		t.Fatalf("exec in %s: %v", name, err)
	}
	return out + errOut, code
}

// TestDiscoveryRollingUpdateDropsNoRequest is issue 11's correctness
// property: a client in another instance calls http://web.berth.internal:8080/
// every 100 ms — resolving the name on each request through its own
// resolver (the bridge's dnsmasq, which forwards the zone to berth), never
// retrying — throughout a rolling update of 3 replicas from hello:1 to
// hello:2 with maxUnavailable 1, and no request fails. Then a replica
// stopped by hand leaves the name, and the time it took is logged.
func TestDiscoveryRollingUpdateDropsNoRequest(t *testing.T) {
	requireLive(t)
	requireTestNetwork(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webWithPorts(3, "hello:1"))
	first := r.commit("web: 3 replicas of hello:1")
	d := startDaemon(t, "--project", project, "--owner", "dns", "run", "--repo", r.dir, "--dir", "apps",
		"--interval", "1h", "--dns-listen", bridgeDNS, "--dns-ttl", "2s")
	d.waitFor("3 ready replicas of hello:1", 5*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 3, first) })

	// The client: an instance on the bridge, not one of berth's.
	ctx := context.Background()
	if err := c.CreateInstance(ctx, lxd.InstancesPost{Name: "client", Source: lxd.ImageSource{Alias: "berth/debian-docker"},
		Profiles: []string{"default", "berth-test"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.StartInstance(ctx, "client"); err != nil {
		t.Fatal(err)
	}
	netWaitAddr(t, c, "client", 2*time.Minute)
	// One request: the name resolved by the instance's own resolver (glibc,
	// through getent: a static busybox cannot resolve names), then a GET,
	// no retry.
	get := func(to string) string {
		return `ip=$(getent ahostsv4 web.berth.internal | head -n1 | cut -d' ' -f1) && timeout 3 busybox wget -q -O ` + to + ` http://$ip:8080/`
	}
	deadline := time.Now().Add(time.Minute)
	for {
		out, code := execIn(t, c, "client", get("-"))
		if code == 0 && strings.Contains(out, "hello") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client cannot reach web.berth.internal: exit %d\n%s\nresolv.conf: %s", code, out, must(execIn(t, c, "client", "cat /etc/resolv.conf")))
		}
		time.Sleep(time.Second)
	}

	// Up to 3,000 requests (5 minutes), until told to stop.
	loop := `n=0; f=0; rm -f /tmp/stop
while [ ! -e /tmp/stop ] && [ $n -lt 3000 ]; do
  ` + get("/dev/null") + ` || { f=$((f+1)); echo "failed at $(date +%T.%N)"; }
  n=$((n+1)); busybox sleep 0.1
done
echo "requests $n failed $f"`
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() { out, code := execIn(t, c, "client", loop); done <- result{out, code} }()
	time.Sleep(2 * time.Second) // requests before the rollout starts

	r.write("apps/web.yaml", webWithPorts(3, "hello:2"))
	second := r.commit("web: hello:2")
	d.waitFor("the rolling update to hello:2", 5*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 3, second) })
	time.Sleep(3 * time.Second) // requests after it
	execIn(t, c, "client", "touch /tmp/stop")
	res := <-done
	m := regexp.MustCompile(`requests (\d+) failed (\d+)`).FindStringSubmatch(res.out)
	if m == nil {
		t.Fatalf("client output: %s", res.out)
	}
	requests, _ := strconv.Atoi(m[1])
	failed, _ := strconv.Atoi(m[2])
	t.Logf("rolling update hello:1 → hello:2 (3 replicas, maxUnavailable 1): %d requests, %d failed", requests, failed)
	if failed != 0 || requests < 50 {
		t.Errorf("%d of %d requests failed during the rollout:\n%s\ndaemon log:\n%s", failed, requests, res.out, tail(d.log(), 60))
	}
	checkFleet(t, c, "web", "hello:2", 3)

	// A replica stopped by hand leaves the name.
	addr := netWaitAddr(t, c, "web-2", 2*time.Minute)
	if got, _ := lookupA(t, "web.berth.internal"); !contains(got, addr) {
		t.Fatalf("web-2 (%s) is not in web.berth.internal: %v", addr, got)
	}
	start := time.Now()
	go func() { _ = c.StopInstance(context.Background(), "web-2", 30*time.Second) }()
	for {
		got, rcode := lookupA(t, "web.berth.internal")
		if rcode == dns.RcodeSuccess && !contains(got, addr) {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("web-2 still answered 2 minutes after its stop: %v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("from the stop of web-2 to its address leaving web.berth.internal: %s", time.Since(start).Round(10*time.Millisecond))

	// Names berth does not know are NXDOMAIN.
	if _, rcode := lookupA(t, "nothing.berth.internal"); rcode != dns.RcodeNameError {
		t.Errorf("unknown name: rcode %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}
	if code := d.stop(); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}

func must(s string, _ int) string { return s }

// TestSelfHealOff: with --self-heal=false, an instance stopped by hand is
// reported — status drift, a log line naming who stopped it — and berth
// writes nothing: LXD's own event stream shows no start of it.
func TestSelfHealOff(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(2, "hello:1"))
	rev := r.commit("web: 2 replicas")
	// Without self-heal a daemon applies only revisions that arrive while
	// it runs: this one is applied before it starts.
	if code, out, errOut := berth(t, "--project", project, "--owner", "heal", "apply", "--yes", "--repo", r.dir, "--dir", "apps"); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errOut)
	}
	d := startDaemon(t, "--project", project, "--owner", "heal", "run", "--repo", r.dir, "--dir", "apps",
		"--interval", "1h", "--self-heal=false")
	d.waitFor("2 ready replicas", 5*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 2, rev) })

	ctx := context.Background()
	events := recordEvents(t, c)
	if err := c.StopInstance(ctx, "web-1", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	st := d.waitFor("the drift to be reported", 2*time.Minute, func(st reconciler.LoopStatus) bool {
		for _, a := range st.Apps {
			if a.App == "web" && a.Sync == "OutOfSync" && len(a.Drift) > 0 && strings.Contains(strings.Join(a.Drift, " "), "web-1 start") {
				return true
			}
		}
		return false
	})
	log := d.log()
	if !strings.Contains(log, "instance changed") || !strings.Contains(log, "web-1") || !strings.Contains(log, "drift left alone") {
		t.Errorf("no log line for the change and the drift left alone:\n%s", tail(log, 30))
	}
	// Another run, from a poll or a trigger, writes nothing either.
	if resp, err := http.Post(d.url+"/api/v1/sync", "", nil); err == nil {
		resp.Body.Close()
	}
	d.waitFor("the triggered run", time.Minute, func(s reconciler.LoopStatus) bool { return s.LastRun.After(st.LastRun) })
	for _, e := range events() {
		if e.Instance() == "web-1" && (e.Metadata.Action == "instance-started" || e.Metadata.Action == "instance-restarted") {
			t.Errorf("berth wrote with self-heal off: %+v", e)
		}
	}
	if inst, _, err := c.GetInstance(ctx, "web-1"); err != nil || inst.Status != "Stopped" {
		t.Errorf("web-1: %v, %v", inst, err)
	}
	if err := d.stop(); err != 0 {
		t.Errorf("daemon exit %d", err)
	}
}
