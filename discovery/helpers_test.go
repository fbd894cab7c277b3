package discovery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

// at is the time of the test views.
var at = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// webApp is "web", n replicas serving http on 8080/tcp and dns on 53/udp.
func webApp(n int) spec.App {
	a := plantest.App("web", n, 1, "hello:1")
	a.Spec.Container.Ports = []spec.Port{
		{Name: "http", Port: 8080, Protocol: "tcp"},
		{Name: "dns", Port: 53, Protocol: "udp"},
	}
	return a
}

// fleet is a converged view of apps, replica i of each app at address
// 10.0.<app index>.<i+10>.
func fleet(apps ...spec.App) reconciler.View {
	obs := plantest.Converged(apps...)
	appIndex := map[string]int{}
	for i, a := range apps {
		appIndex[a.Metadata.Name] = i
	}
	for i := range obs.Instances {
		inst := &obs.Instances[i]
		app, slot := inst.Config["user.berth.app"], 0
		fmt.Sscan(inst.Config["user.berth.slot"], &slot)
		inst.Addresses = []string{fmt.Sprintf("10.0.%d.%d", appIndex[app], slot+10)}
	}
	return reconciler.View{Desired: plan.Desired{Revision: "r1", Apps: apps}, Observed: obs, At: at}
}

// instance returns the named instance of v.
func instance(t *testing.T, v *reconciler.View, name string) *plan.Instance {
	t.Helper()
	for i := range v.Observed.Instances {
		if v.Observed.Instances[i].Name == name {
			return &v.Observed.Instances[i]
		}
	}
	t.Fatalf("no instance %s", name)
	return nil
}

func newDiscovery(t testing.TB) *discovery.Discovery {
	t.Helper()
	d, err := discovery.New(discovery.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// ask answers one question in memory, as over UDP without EDNS.
func ask(d *discovery.Discovery, name string, qtype uint16) *dns.Msg {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	return d.Answer(q, dns.MinMsgSize)
}

// addrs are the A records' addresses in rrs, in order.
func addrs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// set is rrs' addresses as a set, for answers whose order rotates.
func set(rrs []dns.RR) map[string]bool {
	out := map[string]bool{}
	for _, a := range addrs(rrs) {
		out[a] = true
	}
	return out
}

// serveDNS serves d on a free loopback port for the test's duration.
func serveDNS(t testing.TB, d *discovery.Discovery) string {
	t.Helper()
	srv, err := d.ListenDNS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv.Addr().String()
}

// exchange asks addr over network ("udp" or "tcp") and fails the test on
// a transport error.
func exchange(t testing.TB, network, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}
