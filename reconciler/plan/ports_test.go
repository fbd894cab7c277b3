package plan_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

func TestReplicaAvailabilityPorts(t *testing.T) {
	running := func(health string) *plan.Container {
		return &plan.Container{Name: "web", State: "running", Health: health}
	}
	tests := []struct {
		name string
		inst plan.Instance
		want plan.Availability
	}{
		{"healthy, ports open", plan.Instance{Status: "Running", Container: running("healthy"), Addresses: []string{"10.0.0.2"}}, plan.Ready},
		{"healthy, a port closed", plan.Instance{Status: "Running", Container: running("healthy"), Addresses: []string{"10.0.0.2"},
			ClosedPorts: []string{"9999/tcp"}}, plan.Unavailable},
		{"no healthcheck, a port closed", plan.Instance{Status: "Running", Container: running(""), ClosedPorts: []string{"8080/tcp"}}, plan.Unavailable},
		{"healthy, ports unchecked", plan.Instance{Status: "Running", Container: running("healthy"),
			PortsUnchecked: "10.0.0.2 is not reachable from here"}, plan.Ready},
		{"no address at all", plan.Instance{Status: "Running", Container: running("healthy"), PortsUnchecked: "no IPv4 address"}, plan.Ready},
		{"starting, ports open", plan.Instance{Status: "Running", Container: running("starting"), Addresses: []string{"10.0.0.2"}}, plan.Unavailable},
		{"stopped with a stale closed port", plan.Instance{Status: "Stopped", ClosedPorts: []string{"8080/tcp"}}, plan.Unavailable},
		{"docker not answering, a port closed", plan.Instance{Status: "Running", DockerError: "EOF", ClosedPorts: []string{"8080/tcp"}}, plan.Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := plan.ReplicaAvailability(&tt.inst); got != tt.want {
				t.Errorf("ReplicaAvailability = %s, want %s", got, tt.want)
			}
		})
	}
}

// A closed port makes the replica unready for the planner (it counts
// against maxUnavailable) and for the status alike, which names the port
// and the address.
func TestClosedPortsStatusAndPlan(t *testing.T) {
	old := plantest.App("web", 3, 1, "reg/web:1")
	now := plantest.App("web", 3, 1, "reg/web:2")
	obs := plantest.Converged(old)
	for i := range obs.Instances {
		obs.Instances[i].Addresses = []string{"10.213.87." + string(rune('1'+i))}
	}
	obs.Instances[0].ClosedPorts = []string{"9999/tcp"}
	obs.Instances[1].PortsUnchecked = "10.213.87.2 is not reachable from here: no route to host"

	desired := plan.Desired{Revision: "r2", Apps: []spec.App{now}}
	pl := plan.MakePlan(desired, obs, plan.Policy{})
	st := plan.BuildStatus("", &desired, obs, &pl)
	a := st.Apps[0]
	if a.Ready != 2 || a.Replicas[0].Ready || !a.Replicas[1].Ready {
		t.Fatalf("ready %d, replicas %+v", a.Ready, a.Replicas)
	}
	r0 := a.Replicas[0]
	if r0.Address != "10.213.87.1" || !slices.Equal(r0.ClosedPorts, []string{"9999/tcp"}) || r0.Error != "port 9999/tcp closed on 10.213.87.1" {
		t.Errorf("web-0: %+v", r0)
	}
	if a.LastError != "web-0: port 9999/tcp closed on 10.213.87.1" || a.Health != plan.HealthDegraded {
		t.Errorf("health %s, last error %q", a.Health, a.LastError)
	}
	if r1 := a.Replicas[1]; r1.PortsUnchecked == "" || r1.Error != "" {
		t.Errorf("web-1: %+v", r1)
	}
	// The planner sees web-0 as the one unavailable replica: it is
	// replaced first, in a batch of its own.
	if len(pl.Steps) != 3 || pl.Steps[0].Instance != "web-0" || pl.Steps[0].Batch != 1 || pl.Steps[1].Batch != 2 {
		t.Errorf("steps %+v", pl.Steps)
	}
	text := st.Text()
	for _, want := range []string{"10.213.87.1, closed 9999/tcp", "ports not checked: 10.213.87.2 is not reachable from here"} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}
}

// The replica with a closed port is the one the rollout takes first,
// whatever its slot: it does not serve anyway.
func TestClosedPortReplicaGoesFirst(t *testing.T) {
	old := plantest.App("web", 3, 1, "reg/web:1")
	now := plantest.App("web", 3, 1, "reg/web:2")
	obs := plantest.Converged(old)
	obs.Instances[2].ClosedPorts = []string{"8080/tcp"}
	pl := plan.MakePlan(plan.Desired{Revision: "r2", Apps: []spec.App{now}}, obs, plan.Policy{})
	if len(pl.Steps) == 0 || pl.Steps[0].Instance != "web-2" {
		t.Errorf("steps %+v", pl.Steps)
	}
}

func TestPortsClosedPlural(t *testing.T) {
	a := plantest.App("web", 1, 1, "reg/web:1")
	obs := plantest.Converged(a)
	obs.Instances[0].ClosedPorts = []string{"8080/tcp", "9090/tcp"}
	st := plan.BuildStatus("", nil, obs, nil)
	if got := st.Apps[0].Replicas[0].Error; got != "ports 8080/tcp, 9090/tcp closed on -" {
		t.Errorf("error %q", got)
	}
}
