package server

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

// discoveryFixture is a server whose endpoint routes serve a real
// Discovery, with no view yet.
func discoveryFixture(t *testing.T) (*fixture, *discovery.Discovery) {
	t.Helper()
	d, err := discovery.New(discovery.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{backend: &fakeBackend{}, metrics: NewMetrics(), logs: &logBuffer{}}
	s, err := New(Config{Listen: "127.0.0.1:0", Discovery: d}, f.backend, f.metrics)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = s
	return f, d
}

// webView is "web" with two replicas serving http on 8080/tcp: web-0
// ready at 10.0.0.10, web-1 starting at 10.0.0.11.
func webView() reconciler.View {
	a := plantest.App("web", 2, 1, "hello:1")
	a.Spec.Container.Ports = []spec.Port{{Name: "http", Port: 8080, Protocol: "tcp"}}
	obs := plantest.Converged(a)
	obs.Instances[0].Addresses = []string{"10.0.0.10"}
	obs.Instances[1].Addresses = []string{"10.0.0.11"}
	obs.Instances[1].Container.Health = "starting"
	return reconciler.View{
		Desired: plan.Desired{Revision: "r1", Apps: []spec.App{a}}, Observed: obs,
		At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

func TestEndpointRoutesWithoutDiscovery(t *testing.T) {
	f := newFixture(t, false)
	for _, path := range []string{"/api/v1/endpoints", "/api/v1/sd/prometheus"} {
		if r := f.do(t, "GET", path, nil, nil); r.code != 404 {
			t.Errorf("%s without discovery: %d, want 404", path, r.code)
		}
	}
}

func TestEndpointRoutesBeforeTheFirstView(t *testing.T) {
	f, _ := discoveryFixture(t)
	for _, path := range []string{"/api/v1/endpoints", "/api/v1/sd/prometheus"} {
		r := f.do(t, "GET", path, nil, nil)
		var body map[string]string
		if r.code != 503 || json.Unmarshal([]byte(r.body), &body) != nil || body["error"] == "" || r.header.Get("Retry-After") == "" {
			t.Errorf("%s before a view: %d %q (Retry-After %q), want 503 with a JSON error", path, r.code, r.body, r.header.Get("Retry-After"))
		}
	}
}

func TestEndpointsRoute(t *testing.T) {
	f, d := discoveryFixture(t)
	d.Update(webView())
	r := f.do(t, "GET", "/api/v1/endpoints", nil, nil)
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", r.code, r.header.Get("Content-Type"), r.body)
	}
	var body struct {
		Revision   string `json:"revision"`
		ObservedAt string `json:"observedAt"`
		Zone       string `json:"zone"`
		Apps       []struct {
			App      string           `json:"app"`
			Replicas []map[string]any `json:"replicas"`
		} `json:"apps"`
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatal(err)
	}
	if body.Revision != "r1" || body.ObservedAt != "2026-03-01T12:00:00Z" || body.Zone != "berth.internal" || len(body.Apps) != 1 || body.Apps[0].App != "web" {
		t.Fatalf("body: %s", r.body)
	}
	reps := body.Apps[0].Replicas
	if len(reps) != 2 {
		t.Fatalf("replicas: %v", reps)
	}
	keys := []string{"address", "instance", "member", "ports", "ready", "revision", "slot"}
	if got := slices.Sorted(maps.Keys(reps[0])); !slices.Equal(got, keys) {
		t.Errorf("a ready replica's keys: %v, want %v", got, keys)
	}
	if got := slices.Sorted(maps.Keys(reps[1])); !slices.Equal(got, slices.Sorted(slices.Values(append(keys, "reason")))) {
		t.Errorf("a replica that is not ready: %v, want %v and reason", got, keys)
	}
	want0 := map[string]any{
		"instance": "web-0", "slot": 0.0, "address": "10.0.0.10", "ready": true, "revision": "r1", "member": "",
		"ports": []any{map[string]any{"name": "http", "port": 8080.0, "protocol": "tcp"}},
	}
	if !jsonEqual(reps[0], want0) {
		t.Errorf("web-0: %v, want %v", reps[0], want0)
	}
	if reps[1]["ready"] != false || reps[1]["reason"] != "container health starting" {
		t.Errorf("web-1: %v", reps[1])
	}
	if r := f.do(t, "POST", "/api/v1/endpoints", nil, nil); r.code != 405 {
		t.Errorf("POST: %d, want 405", r.code)
	}
}

func TestPrometheusSDRoute(t *testing.T) {
	f, d := discoveryFixture(t)
	d.Update(webView())
	r := f.do(t, "GET", "/api/v1/sd/prometheus", nil, nil)
	if r.code != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %s: %s", r.code, r.header.Get("Content-Type"), r.body)
	}
	var groups []struct {
		Targets []string          `json:"targets"`
		Labels  map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(r.body), &groups); err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{{
		"__meta_berth_app": "web", "__meta_berth_instance": "web-0", "__meta_berth_port": "8080",
		"__meta_berth_port_name": "http", "__meta_berth_protocol": "tcp", "__meta_berth_ready": "true",
		"__meta_berth_revision": "r1", "__meta_berth_member": "",
	}, {
		"__meta_berth_app": "web", "__meta_berth_instance": "web-1", "__meta_berth_port": "8080",
		"__meta_berth_port_name": "http", "__meta_berth_protocol": "tcp", "__meta_berth_ready": "false",
		"__meta_berth_revision": "r1", "__meta_berth_member": "",
	}}
	targets := []string{"10.0.0.10:8080", "10.0.0.11:8080"}
	if len(groups) != len(want) {
		t.Fatalf("%d groups: %s", len(groups), r.body)
	}
	for i, g := range groups {
		if !slices.Equal(g.Targets, targets[i:i+1]) || !maps.Equal(g.Labels, want[i]) {
			t.Errorf("group %d: %v %v, want %v %v", i, g.Targets, g.Labels, targets[i], want[i])
		}
	}
	// A drained replica is listed, as not ready.
	d.Drain("web-0")
	r = f.do(t, "GET", "/api/v1/sd/prometheus", nil, nil)
	if err := json.Unmarshal([]byte(r.body), &groups); err != nil || groups[0].Labels["__meta_berth_ready"] != "false" {
		t.Errorf("drained web-0: %v %v", err, groups)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
