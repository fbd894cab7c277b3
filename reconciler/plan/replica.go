package plan

import (
	"strings"

	"github.com/berth-gitops/berth/ownership"
)

// This file holds the two questions every part of berth asks about an
// observed instance, answered once: which replica is it (ownership's
// parser), and does it serve?
// The planner, the status and the metrics all use these, so they cannot
// disagree about the same instance.

// identity reads which replica an owned instance is (see
// ownership.ParseInstance); an error means its keys are garbled or
// disagree with its name, and berth leaves it alone.
func identity(inst *Instance) (app string, slot int, err error) {
	id, err := ownership.ParseInstance(inst.Name, inst.Config)
	return id.App, id.Slot, err
}

// Availability is whether a replica serves, as far as can be seen.
type Availability int

const (
	// Unavailable: the instance is not running, its app container is
	// missing, not running, starting or unhealthy, or a declared TCP port
	// is closed.
	Unavailable Availability = iota
	// Ready: the instance runs, its app container runs and is healthy
	// (or has no healthcheck), and no declared TCP port was found closed.
	Ready
	// Unknown: the instance runs but its Docker did not answer, or could
	// not be asked, so the container could not be seen.
	Unknown
)

func (a Availability) String() string {
	switch a {
	case Ready:
		return "ready"
	case Unknown:
		return "unknown"
	}
	return "unavailable"
}

// ReplicaAvailability is the one definition of "ready": the instance is
// Running, Docker answered, the app container is running with health
// "" (no healthcheck) or "healthy", and every TCP port the app declares
// accepted a connection on the replica's address (ClosedPorts is empty).
// A container whose health is still "starting" is not ready: counting it
// as serving would let a rollout take a second replica down while the
// first has not come back. Ports that could not be checked from where
// berth runs (PortsUnchecked) do not count against readiness: the
// healthcheck decides.
func ReplicaAvailability(inst *Instance) Availability {
	if inst.Status != StatusRunning || provisionPending(inst) {
		return Unavailable
	}
	if systemOnly(inst) {
		// A plain managed system: running, provisioned, its ports open.
		if len(inst.ClosedPorts) > 0 {
			return Unavailable
		}
		return Ready
	}
	if inst.DockerError != "" || inst.DockerUnknown != "" {
		return Unknown
	}
	c := inst.Container
	if c == nil || c.State != stateRunning {
		return Unavailable
	}
	if c.Health != "" && c.Health != healthHealthy {
		return Unavailable
	}
	if len(inst.ClosedPorts) > 0 {
		return Unavailable
	}
	return Ready
}

// NotReadyReason says briefly why a replica is not Ready, in the terms of
// ReplicaAvailability: "instance stopped", "docker not answering: …",
// "no app container", "container exited", "container health starting",
// "port 9999/tcp closed". The plan's Unready list and service discovery
// both use it.
func NotReadyReason(inst *Instance) string {
	c := inst.Container
	av := ReplicaAvailability(inst)
	switch {
	case inst.Status != StatusRunning:
		return "instance " + strings.ToLower(inst.Status)
	case provisionPending(inst):
		return provisionNotDone
	case systemOnly(inst) && len(inst.ClosedPorts) > 0:
		return portsWord(inst.ClosedPorts) + " closed"
	case systemOnly(inst):
		return av.String()
	case inst.DockerUnknown != "":
		return dockerUnknownWord + inst.DockerUnknown
	case av == Unknown || inst.DockerError != "":
		return "docker not answering: " + inst.DockerError
	case c == nil:
		return "no app container"
	case c.State != stateRunning:
		return "container " + c.State
	case c.Health != "" && c.Health != healthHealthy:
		return "container health " + c.Health
	case len(inst.ClosedPorts) > 0:
		return portsWord(inst.ClosedPorts) + " closed"
	}
	return av.String()
}

// dockerUnknownWord starts the reason of a replica whose Docker could not
// be looked at (Instance.DockerUnknown says why).
const dockerUnknownWord = "docker state unknown: "

// portsWord is "port 80/tcp" or "ports 80/tcp, 443/tcp".
func portsWord(ports []string) string {
	if len(ports) == 1 {
		return "port " + ports[0]
	}
	return "ports " + strings.Join(ports, ", ")
}

// provisionNotDone is why a replica whose provision has not succeeded is
// not ready.
const provisionNotDone = "provision not done (failed or interrupted)"

// provisionPending reports whether the instance's provision started and
// has not succeeded: what it configures may be half done.
func provisionPending(inst *Instance) bool {
	return inst.Config[ownership.KeyProvisionHash] == ownership.ProvisionPending
}

// systemOnly reports whether the instance is a replica of an app without
// an app container.
func systemOnly(inst *Instance) bool { return inst.Config[ownership.KeySystemOnly] == "true" }
