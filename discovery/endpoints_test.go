package discovery_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/miekg/dns"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// mixedFleet has one replica in each state the endpoints tell apart.
func mixedFleet(t *testing.T) reconciler.View {
	v := fleet(webApp(4), plantest.App("db", 1, 1, "pg:16"), plantest.App("idle", 0, 1, "x:1"))
	instance(t, &v, "web-1").Container.Health = "starting"
	instance(t, &v, "web-2").Container.Labels["berth.revision"] = "r2"
	instance(t, &v, "web-3").Status = "Stopped"
	instance(t, &v, "web-3").Container = nil
	instance(t, &v, "web-3").Addresses = nil
	instance(t, &v, "db-0").ClosedPorts = []string{"5432/tcp"}
	return v
}

func TestEndpointsShape(t *testing.T) {
	d := newDiscovery(t)
	if _, ok := d.Endpoints(); ok {
		t.Error("endpoints before the first view")
	}
	if _, ok := d.PrometheusTargets(); ok {
		t.Error("targets before the first view")
	}
	d.Update(mixedFleet(t))
	d.Drain("web-2")
	body, ok := d.Endpoints()
	if !ok {
		t.Fatal("no endpoints after a view")
	}
	golden(t, "endpoints.json", body)
}

func TestPrometheusTargetsShape(t *testing.T) {
	d := newDiscovery(t)
	d.Update(mixedFleet(t))
	d.Drain("web-2")
	body, _ := d.PrometheusTargets()
	golden(t, "prometheus.json", body)

	// No replica with an address and a port: an empty list, not null.
	d.Update(fleet(plantest.App("db", 1, 1, "pg:16")))
	body, _ = d.PrometheusTargets()
	if got, _ := json.Marshal(body); string(got) != "[]" {
		t.Errorf("no targets: %s, want []", got)
	}
}

func TestHeldAppKeepsItsPorts(t *testing.T) {
	d := newDiscovery(t)
	v := fleet(webApp(1))
	d.Update(v)
	// The next commit breaks web's spec: it is held, running as before.
	held := v
	held.Desired.Apps, held.Desired.HeldApps = nil, []string{"web"}
	d.Update(held)
	if r := ask(d, "_http._tcp.web.berth.internal.", dns.TypeSRV); len(r.Answer) != 1 {
		t.Errorf("SRV of a held app: %v", r.Answer)
	}
}

// golden compares v, as indented JSON, with testdata/name (-update
// rewrites it).
func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s", path, got)
	}
}
