package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/reconciler"
)

// The test network's bridge (testenv.sh up): the daemon serves DNS on its
// address, where the instances' dnsmasq forwards the zone.
const (
	testBridge     = "berthbr0"
	testBridgeAddr = "10.213.87.1"
)

// requireTestNetwork fails (when LXD is required) or skips unless the
// bridge is there.
func requireTestNetwork(t *testing.T) {
	t.Helper()
	testlxd.Short(t)
	if out, err := exec.Command("lxc", "network", "show", testBridge).CombinedOutput(); err != nil {
		testlxd.SkipUnlessUsable(t, fmt.Errorf("no test network %s (testenv.sh up): %v: %s", testBridge, err, bytes.TrimSpace(out)))
	}
}

// webWithPorts is webSpec with its HTTP port declared.
func webWithPorts(replicas int, image string) string {
	return strings.Replace(webSpec(replicas, image), "  update:\n", "    ports: [{name: http, port: 8080, protocol: tcp}]\n  update:\n", 1)
}

// freeUDPPort returns a UDP and TCP port free on the bridge address.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", testBridgeAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	_ = pc.Close()
	return addr
}

// TestDaemonServesDNSOnTheBridge runs `berth run --dns-listen` on the
// bridge address against real LXD and asks it from the host: the app's
// name holds its ready replicas' addresses (those LXD reports), each
// replica has its own name, SRV names the port, unknown names are
// NXDOMAIN; the endpoints and Prometheus SD say the same. Then malformed
// packets and a bounded flood, after which the daemon still answers.
func TestDaemonServesDNSOnTheBridge(t *testing.T) {
	requireLive(t)
	requireTestNetwork(t)
	project, c := e2eProject(t)
	dnsAddr := freeUDPPort(t)
	r := newRepo(t)
	r.write("apps/web.yaml", webWithPorts(2, "hello:1"))
	rev := r.commit("web: 2 replicas of hello:1 on port 8080")
	d := startDaemon(t, "--project", project, "--owner", "dnstest", "run", "--repo", r.dir, "--dir", "apps",
		"--interval", "1h", "--dns-listen", dnsAddr, "--dns-ttl", "1s")
	d.waitFor("2 ready replicas", 5*time.Minute, func(st reconciler.LoopStatus) bool { return appReady(st, "web", 2, rev) })

	want := []string{netWaitAddr(t, c, "web-0", time.Minute), netWaitAddr(t, c, "web-1", time.Minute)}
	ask := func(network, name string, qtype uint16) *dns.Msg {
		t.Helper()
		q := new(dns.Msg)
		q.SetQuestion(name, qtype)
		cl := &dns.Client{Net: network, Timeout: 2 * time.Second}
		in, _, err := cl.Exchange(q, dnsAddr)
		if err != nil {
			t.Fatalf("%s %s: %v", network, name, err)
		}
		return in
	}
	aOf := func(rrs []dns.RR) []string {
		var out []string
		for _, rr := range rrs {
			if a, ok := rr.(*dns.A); ok {
				out = append(out, a.A.String())
			}
		}
		slices.Sort(out)
		return out
	}
	// The view the readiness comes from may lag the status by a run.
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(aOf(ask("udp", "web.berth.internal.", dns.TypeA).Answer), slices.Sorted(slices.Values(want))) {
		if time.Now().After(deadline) {
			t.Fatalf("web.berth.internal: %v, want %v\n%s", aOf(ask("udp", "web.berth.internal.", dns.TypeA).Answer), want, tail(d.log(), 40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := aOf(ask("tcp", "WEB.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("over TCP, upper case: %v", got)
	}
	for i, inst := range []string{"web-0", "web-1"} {
		if got := aOf(ask("udp", inst+".web.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, want[i:i+1]) {
			t.Errorf("%s: %v, want %s", inst, got, want[i])
		}
	}
	srv := ask("udp", "_http._tcp.web.berth.internal.", dns.TypeSRV)
	if len(srv.Answer) != 2 || len(srv.Extra) != 2 || srv.Answer[0].(*dns.SRV).Port != 8080 || srv.Answer[0].(*dns.SRV).Target != "web-0.web.berth.internal." {
		t.Errorf("SRV: %v, additional %v", srv.Answer, srv.Extra)
	}
	if in := ask("udp", "nothing.berth.internal.", dns.TypeA); in.Rcode != dns.RcodeNameError {
		t.Errorf("unknown name: %s", dns.RcodeToString[in.Rcode])
	}
	if in := ask("udp", "example.com.", dns.TypeA); in.Rcode != dns.RcodeRefused {
		t.Errorf("another zone: %s", dns.RcodeToString[in.Rcode])
	}

	// The endpoints and Prometheus SD name the same replicas.
	var e discovery.Endpoints
	getJSON(t, d.url+"/api/v1/endpoints", &e)
	if len(e.Apps) != 1 || len(e.Apps[0].Replicas) != 2 || e.Revision != rev || e.Zone != "berth.internal" {
		t.Fatalf("endpoints: %+v", e)
	}
	for i, rep := range e.Apps[0].Replicas {
		if rep.Address != want[i] || !rep.Ready || rep.Revision != rev || len(rep.Ports) != 1 || rep.Ports[0] != (discovery.Port{Name: "http", Port: 8080, Protocol: "tcp"}) {
			t.Errorf("endpoint %d: %+v", i, rep)
		}
	}
	var groups []discovery.TargetGroup
	getJSON(t, d.url+"/api/v1/sd/prometheus", &groups)
	if len(groups) != 2 || groups[1].Targets[0] != net.JoinHostPort(want[1], "8080") || groups[1].Labels[discovery.LabelReady] != "true" {
		t.Errorf("prometheus targets: %+v", groups)
	}
	if code, out, errOut := berth(t, "endpoints", "--server", d.url); code != 0 || !strings.Contains(out, want[0]) || !strings.Contains(out, "http 8080/tcp") {
		t.Errorf("berth endpoints: exit %d\n%s%s", code, out, errOut)
	}

	// Junk, then a flood bounded in count and time; the daemon answers
	// throughout and after.
	conn, err := net.Dial("udp", dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		_, _ = conn.Write([]byte(strings.Repeat("\xff\x00junk", 1+i%50)))
	}
	_ = conn.Close()
	const queries, workers = 20000, 4
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			co, err := cl.Dial(dnsAddr)
			if err != nil {
				failed.Add(queries / workers)
				return
			}
			defer co.Close()
			q := new(dns.Msg)
			q.SetQuestion("web.berth.internal.", dns.TypeA)
			for range queries / workers {
				if in, _, err := cl.ExchangeWithConn(q, co); err != nil || len(in.Answer) != 2 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	t.Logf("flood on %s: %d queries from %d clients, %d failed, in %s: %.0f queries/s",
		dnsAddr, queries, workers, failed.Load(), took.Round(time.Millisecond), float64(queries)/took.Seconds())
	// UDP on a loaded machine may drop a few; the server must not.
	if failed.Load() > queries/100 {
		t.Errorf("%d of %d queries failed", failed.Load(), queries)
	}
	if took > 2*time.Minute {
		t.Errorf("the flood took %s", took)
	}
	if got := aOf(ask("udp", "web.berth.internal.", dns.TypeA).Answer); len(got) != 2 {
		t.Errorf("after the flood: %v", got)
	}
	if code := d.stop(); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}
