package reconciler

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Status is what `berth status` shows: per app, how far the live state is
// from Git and how healthy it is. It is derived from values (desired,
// observed, plan) each time; berth stores none of it.
type Status struct {
	// Revision is the Git SHA the status compares against ("" if none).
	Revision string          `json:"revision,omitempty"`
	Owner    string          `json:"owner"`
	Apps     []AppStatusView `json:"apps"`
	// Conflicts are names berth wants but may not touch.
	Conflicts []Conflict `json:"conflicts,omitempty"`
}

// Sync states, after Argo CD: does the live state match Git?
const (
	SyncSynced    = "Synced"
	SyncOutOfSync = "OutOfSync"
	SyncHeld      = "Held"     // invalid spec: last applied state kept
	SyncOrphaned  = "Orphaned" // instances of an app no longer in Git
	SyncUnknown   = "Unknown"  // no desired state given
)

// Health states: do the replicas serve?
const (
	HealthHealthy     = "Healthy"
	HealthProgressing = "Progressing" // replicas starting
	HealthDegraded    = "Degraded"    // some replicas not ready
	HealthMissing     = "Missing"     // no replica ready
)

// AppStatusView is one app's line in the status.
type AppStatusView struct {
	App string `json:"app"`
	// Desired is spec.replicas, or -1 when unknown (no desired state, or
	// the app is not in Git).
	Desired int    `json:"desired"`
	Ready   int    `json:"ready"`
	Sync    string `json:"sync"`
	Health  string `json:"health"`
	// Drift lists the plan's steps for the app: "web-1 update-in-place
	// (system.limits.memory)", ...
	Drift []string `json:"drift,omitempty"`
	// LastError is the most telling problem seen on the app's replicas.
	LastError string        `json:"lastError,omitempty"`
	Replicas  []ReplicaView `json:"replicas"`
}

// ReplicaView is one replica as observed.
type ReplicaView struct {
	Instance string `json:"instance"`
	Slot     int    `json:"slot"`
	// Status is LXD's instance status.
	Status string `json:"status"`
	// Revision is the Git SHA last applied to the instance.
	Revision string `json:"revision,omitempty"`
	// Container is the app container's state ("" when none was found).
	Container string `json:"container,omitempty"`
	Health    string `json:"health,omitempty"`
	Image     string `json:"image,omitempty"`
	Ready     bool   `json:"ready"`
	Error     string `json:"error,omitempty"`
}

// BuildStatus derives the status of owner's apps. desired and plan may be
// nil when no desired state is known; then only the live side is shown.
func BuildStatus(owner string, desired *Desired, observed Observed, plan *Plan) Status {
	if owner == "" {
		owner = DefaultOwner
	}
	st := Status{Owner: owner}
	apps := map[string]*AppStatusView{}
	get := func(name string) *AppStatusView {
		if a, ok := apps[name]; ok {
			return a
		}
		a := &AppStatusView{App: name, Desired: -1, Sync: SyncUnknown, Replicas: []ReplicaView{}}
		apps[name] = a
		return a
	}
	if desired != nil {
		st.Revision = desired.Revision
		for _, a := range desired.Apps {
			v := get(a.Metadata.Name)
			v.Desired, v.Sync = a.Spec.Replicas, SyncSynced
		}
		for _, h := range desired.HeldApps {
			get(h).Sync = SyncHeld
		}
	}
	for _, inst := range observed.Instances {
		if inst.Config[KeyOwner] != owner {
			continue
		}
		app := inst.Config[KeyApp]
		slot, err := strconv.Atoi(inst.Config[KeySlot])
		if app == "" || err != nil {
			continue
		}
		v := get(app)
		if desired != nil && v.Sync == SyncUnknown {
			v.Sync = SyncOrphaned
		}
		r := ReplicaView{Instance: inst.Name, Slot: slot, Status: inst.Status, Revision: inst.Config[KeyRevision], Error: inst.DockerError}
		if c := inst.Container; c != nil {
			r.Container, r.Health, r.Image = c.State, c.Health, c.Image
			if c.State == "running" && (c.Health == "" || c.Health == "healthy") {
				r.Ready = inst.Status == StatusRunning
			}
			switch {
			case c.Health == "unhealthy":
				r.Error = "container unhealthy"
			case c.State != "running":
				r.Error = "container " + c.State
			}
		} else if inst.Status == StatusRunning && r.Error == "" {
			r.Error = "no app container"
		}
		if inst.Status != StatusRunning {
			r.Error = "instance " + strings.ToLower(inst.Status)
		}
		if r.Ready {
			v.Ready++
		}
		v.Replicas = append(v.Replicas, r)
	}
	if plan != nil {
		for _, s := range plan.Steps {
			v := get(s.App)
			fields := make([]string, 0, len(s.Reasons))
			for _, r := range s.Reasons {
				fields = append(fields, r.Field)
			}
			d := s.Instance + " " + s.Action.String()
			if len(fields) > 0 {
				d += " (" + strings.Join(fields, ", ") + ")"
			}
			v.Drift = append(v.Drift, d)
			if v.Sync == SyncSynced {
				v.Sync = SyncOutOfSync
			}
		}
		st.Conflicts = plan.Conflicts
	}
	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		v := apps[n]
		slices.SortFunc(v.Replicas, func(a, b ReplicaView) int { return a.Slot - b.Slot })
		want := v.Desired
		if want < 0 {
			want = len(v.Replicas)
		}
		starting := false
		for _, r := range v.Replicas {
			if r.Health == "starting" {
				starting = true
			}
			if r.Error != "" && v.LastError == "" {
				v.LastError = fmt.Sprintf("%s: %s", r.Instance, r.Error)
			}
		}
		switch {
		case v.Ready >= want:
			v.Health = HealthHealthy
		case starting:
			v.Health = HealthProgressing
		case v.Ready == 0:
			v.Health = HealthMissing
		default:
			v.Health = HealthDegraded
		}
		st.Apps = append(st.Apps, *v)
	}
	if st.Apps == nil {
		st.Apps = []AppStatusView{}
	}
	return st
}

// Text renders the status as a table for people.
func (s Status) Text() string {
	var b strings.Builder
	if s.Revision != "" {
		fmt.Fprintf(&b, "Revision %s, owner %s\n\n", ShortSHA(s.Revision), s.Owner)
	} else {
		fmt.Fprintf(&b, "Owner %s (no desired state given)\n\n", s.Owner)
	}
	if len(s.Apps) == 0 {
		b.WriteString("No apps.\n")
		return b.String()
	}
	fmt.Fprintf(&b, "%-20s %-7s %-10s %-12s %s\n", "APP", "READY", "SYNC", "HEALTH", "LAST ERROR")
	for _, a := range s.Apps {
		want := "?"
		if a.Desired >= 0 {
			want = strconv.Itoa(a.Desired)
		}
		fmt.Fprintf(&b, "%-20s %-7s %-10s %-12s %s\n", a.App, fmt.Sprintf("%d/%s", a.Ready, want), a.Sync, a.Health, a.LastError)
		for _, r := range a.Replicas {
			state := r.Status
			if r.Container != "" {
				state += ", container " + r.Container
				if r.Health != "" {
					state += " (" + r.Health + ")"
				}
			}
			fmt.Fprintf(&b, "  %-18s rev %-12s %s\n", r.Instance, ShortSHA(r.Revision), state)
		}
		for _, d := range a.Drift {
			fmt.Fprintf(&b, "  drift: %s\n", d)
		}
	}
	for _, c := range s.Conflicts {
		fmt.Fprintf(&b, "conflict: %s: %s\n", c.Instance, c.Message)
	}
	return b.String()
}
