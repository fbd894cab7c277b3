package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/lxd"
)

// The network of the test environment (testenv.sh): the berth-test profile
// puts eth0 on the managed bridge berthbr0, and the images' init takes an
// address there by DHCP. These checks are made from outside berth: LXD's
// instance state, an HTTP GET from the host, and wget run in an instance.

// netBridge is the test environment's bridge.
const netBridge = "berthbr0"

// netBridgeCIDR returns the bridge's address and subnet as LXD has them
// (ipv4.address), and fails the test if there is no such network.
func netBridgeCIDR(t *testing.T, c *lxd.Client) (net.IP, *net.IPNet) {
	t.Helper()
	var n struct {
		Config map[string]string `json:"config"`
	}
	if err := c.RawQuery(context.Background(), "GET", "/1.0/networks/"+netBridge, nil, "", &n); err != nil {
		t.Fatalf("network %s (testenv.sh up creates it): %v", netBridge, err)
	}
	ip, subnet, err := net.ParseCIDR(n.Config["ipv4.address"])
	if err != nil {
		t.Fatalf("network %s: ipv4.address %q: %v", netBridge, n.Config["ipv4.address"], err)
	}
	return ip, subnet
}

// netWaitAddr polls the instance's state until its eth0 has an IPv4
// address (its DHCP lease), for at most timeout.
func netWaitAddr(t *testing.T, c *lxd.Client, name string, timeout time.Duration) string {
	t.Helper()
	var err error
	for deadline := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var st *lxd.InstanceState
		st, err = c.GetInstanceState(ctx, name)
		cancel()
		if err == nil {
			if a := st.GlobalIPv4(); len(a) > 0 {
				return a[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no IPv4 address on eth0 after %v (last error: %v)", name, timeout, err)
		}
	}
}

// netExec runs a command in an instance and returns its exit code and
// output (stdout and stderr).
func netExec(t *testing.T, c *lxd.Client, name string, command ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, errOut, code, err := execRetry(ctx, c, name, command...)
	if err != nil {
		t.Fatalf("exec %v in %s: %v", command, name, err)
	}
	return code, out + errOut
}

// netHTTPGet fetches url from the host, straight (no proxy from the
// environment), retrying for at most timeout until it answers 200.
func netHTTPGet(t *testing.T, url string, timeout time.Duration) string {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer client.CloseIdleConnections()
	var last string
	for deadline := time.Now().Add(timeout); ; time.Sleep(250 * time.Millisecond) {
		resp, err := client.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && rerr == nil {
				return string(body)
			}
			last = resp.Status + ": " + string(body)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s from the host: %s", url, last)
		}
	}
}

func TestNetworkReplicaAnswersFromHostAndInstance(t *testing.T) {
	requireLive(t)
	project, c := e2eProject(t)
	bridgeIP, subnet := netBridgeCIDR(t, c)

	r := newRepo(t)
	r.write("apps/web.yaml", webSpec(2, "hello:1"))
	r.commit("web: two replicas of hello:1")
	if code, out, errOut := berth(t, "--project", project, "--owner", "e2e", "apply", "--yes", "--repo", r.dir); code != 0 {
		t.Fatalf("apply: exit %d\n%s\n%s", code, out, errOut)
	}

	addr := map[string]string{}
	for _, name := range []string{"web-0", "web-1"} {
		start := time.Now()
		addr[name] = netWaitAddr(t, c, name, time.Minute)
		if ip := net.ParseIP(addr[name]); ip == nil || !subnet.Contains(ip) {
			t.Fatalf("%s: address %s is not on %s (%s)", name, addr[name], netBridge, subnet)
		}
		t.Logf("%s: %s (seen after %v)", name, addr[name], time.Since(start).Round(time.Millisecond))
	}
	if addr["web-0"] == addr["web-1"] {
		t.Fatalf("both replicas have the address %s", addr["web-0"])
	}
	const page = "hello from berth/hello:1\n"

	t.Log("from the host: GET http://<replica>:8080/ answers 200 with the page")
	for _, name := range []string{"web-0", "web-1"} {
		if body := netHTTPGet(t, "http://"+net.JoinHostPort(addr[name], "8080")+"/", 20*time.Second); body != page {
			t.Errorf("GET %s:8080 (%s) from the host: %q, want %q", addr[name], name, body, page)
		}
	}

	t.Log("from another instance: wget in web-1 reaches web-0")
	// Not wget -T: Debian 12's busybox (1.35.0) segfaults with it.
	code, out := netExec(t, c, "web-1", "timeout", "10", "busybox", "wget", "-q", "-O", "-", "http://"+net.JoinHostPort(addr["web-0"], "8080")+"/")
	if code != 0 || out != page {
		t.Errorf("wget of web-0 (%s) in web-1: exit %d, %q, want %q", addr["web-0"], code, out, page)
	}

	t.Log("the resolver from the lease is the bridge, in the instance and in its app container")
	wantNS := "nameserver " + bridgeIP.String() + "\n"
	if code, out := netExec(t, c, "web-0", "cat", "/etc/resolv.conf"); code != 0 || !strings.Contains(out, wantNS) {
		t.Errorf("/etc/resolv.conf of web-0: exit %d\n%s\nwant a line %q", code, out, strings.TrimSpace(wantNS))
	}
	if code, out := netExec(t, c, "web-0", "docker", "exec", "web", "cat", "/etc/resolv.conf"); code != 0 || !strings.Contains(out, wantNS) {
		t.Errorf("/etc/resolv.conf of web-0's app container: exit %d\n%s\nwant a line %q", code, out, strings.TrimSpace(wantNS))
	}
}
