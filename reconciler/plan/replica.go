package plan

import "strconv"

// This file holds the two questions every part of berth asks about an
// observed instance, answered once: which replica is it, and does it serve?
// The planner, the status and the metrics all use these, so they cannot
// disagree about the same instance.

// Identity reads the app and slot berth recorded on an instance. ok is
// false when the keys are missing, the slot is not a canonical decimal
// ("01", "+1", "-1"), or the instance's name is not <app>-<slot>: such an
// instance is berth's but garbled, and is left alone.
func Identity(inst *Instance) (app string, slot int, ok bool) {
	app = inst.Config[KeyApp]
	s := inst.Config[KeySlot]
	if app == "" || s == "" {
		return "", 0, false
	}
	slot, err := strconv.Atoi(s)
	if err != nil || slot < 0 || strconv.Itoa(slot) != s {
		return "", 0, false
	}
	if !isInstanceName(inst.Name, app, s) {
		return app, slot, false
	}
	return app, slot, true
}

// isInstanceName reports whether name is InstanceName(app, slot), slot
// given in canonical decimal, without building the name: this runs for
// every owned instance.
func isInstanceName(name, app, slot string) bool {
	return len(name) == len(app)+1+len(slot) &&
		name[:len(app)] == app && name[len(app)] == '-' && name[len(app)+1:] == slot
}

// Availability is whether a replica serves, as far as can be seen.
type Availability int

const (
	// Unavailable: the instance is not running, or its app container is
	// missing, not running, starting or unhealthy.
	Unavailable Availability = iota
	// Ready: the instance runs and its app container runs and is healthy
	// (or has no healthcheck).
	Ready
	// Unknown: the instance runs but its Docker did not answer, so the
	// container could not be seen.
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
// Running, Docker answered, and the app container is running with health
// "" (no healthcheck) or "healthy". A container whose health is still
// "starting" is not ready: counting it as serving would let a rollout
// take a second replica down while the first has not come back.
func ReplicaAvailability(inst *Instance) Availability {
	if inst.Status != StatusRunning {
		return Unavailable
	}
	if inst.DockerError != "" {
		return Unknown
	}
	c := inst.Container
	if c == nil || c.State != stateRunning {
		return Unavailable
	}
	if c.Health != "" && c.Health != healthHealthy {
		return Unavailable
	}
	return Ready
}
