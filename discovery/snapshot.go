package discovery

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// Snapshot is one published state of discovery: the owner's replicas per
// app as of one view, and the DNS names built from them. It is never
// changed once published.
type Snapshot struct {
	// Revision is the Git revision of the view's desired state.
	Revision string
	// At is when the view was taken.
	At time.Time
	// Apps are sorted by name, each app's replicas by slot.
	Apps []App

	zone  string
	ttl   uint32
	names map[string]*node // canonical FQDN → what it holds
}

// App is an app's replicas.
type App struct {
	// Name is the app's name (metadata.name).
	Name string `json:"app"`
	// Replicas are the owner's replicas of the app that LXD shows, sorted
	// by slot: ready or not.
	Replicas []Replica `json:"replicas"`

	ports []Port // the app's ports, for SRV names
}

// Replica is one replica as discovery sees it.
type Replica struct {
	// Instance is the LXD instance, <app>-<slot>.
	Instance string `json:"instance"`
	// Slot is the replica's slot number.
	Slot int `json:"slot"`
	// Address is the replica's IPv4 address (eth0's first), "" when it
	// has none.
	Address string `json:"address"`
	// Ports are the ports the app declares (spec.container.ports).
	Ports []Port `json:"ports"`
	// Ready is whether the replica is answered: plan.ReplicaAvailability
	// says Ready, it has an address and it is not drained.
	Ready bool `json:"ready"`
	// Reason says why a replica is not ready ("" when it is).
	Reason string `json:"reason,omitempty"`
	// Revision is the Git revision the replica runs: its app container's
	// berth.revision label, else the instance's user.berth.revision.
	Revision string `json:"revision"`
	// Member is the LXD cluster member the instance is on; "" when not
	// known (a single host).
	Member string `json:"member"`

	addr netip.Addr
}

// Port is a port an app serves on.
type Port struct {
	Name     string `json:"name"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
}

// Reasons a replica that plan.ReplicaAvailability calls Ready is not
// answered.
const (
	ReasonDrained   = "drained: being updated or removed"
	ReasonNoAddress = "no IPv4 address"
)

// build makes a snapshot of owner's replicas. drained says which are held
// out; prev (may be nil) lends the ports of apps whose spec is held at
// this revision, so a bad commit does not drop their SRV records.
func build(owner string, desired plan.Desired, observed plan.Observed, drained func(string) bool, prev *Snapshot) *Snapshot {
	ports := map[string][]Port{}
	for _, a := range desired.Apps {
		ports[a.Metadata.Name] = specPorts(a)
	}
	if prev != nil {
		for _, name := range desired.HeldApps {
			if i, ok := slices.BinarySearchFunc(prev.Apps, name, func(a App, n string) int { return strings.Compare(a.Name, n) }); ok {
				ports[name] = prev.Apps[i].ports
			}
		}
	}
	apps := map[string]*App{}
	appOf := func(name string) *App {
		a := apps[name]
		if a == nil {
			a = &App{Name: name, Replicas: []Replica{}, ports: ports[name]}
			apps[name] = a
		}
		return a
	}
	for _, a := range desired.Apps {
		appOf(a.Metadata.Name)
	}
	for i := range observed.Instances {
		inst := &observed.Instances[i]
		if inst.Config[ownership.KeyOwner] != owner {
			continue
		}
		id, err := ownership.ParseInstance(inst.Name, inst.Config)
		if err != nil {
			continue // not a replica: berth leaves it alone
		}
		a := appOf(id.App)
		a.Replicas = append(a.Replicas, replica(inst, id, a.ports, drained(inst.Name)))
	}
	s := &Snapshot{Revision: desired.Revision, Apps: make([]App, 0, len(apps))}
	for _, a := range apps {
		slices.SortFunc(a.Replicas, func(x, y Replica) int { return x.Slot - y.Slot })
		s.Apps = append(s.Apps, *a)
	}
	slices.SortFunc(s.Apps, func(x, y App) int { return strings.Compare(x.Name, y.Name) })
	return s
}

func specPorts(a spec.App) []Port {
	out := make([]Port, 0, len(a.Spec.Container.Ports))
	for _, p := range a.Spec.Container.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = spec.ProtocolTCP
		}
		out = append(out, Port{Name: p.Name, Port: p.Port, Protocol: proto})
	}
	return out
}

// replica is inst as discovery shows it.
func replica(inst *plan.Instance, id ownership.Instance, ports []Port, drained bool) Replica {
	r := Replica{
		Instance: inst.Name, Slot: id.Slot, Ports: ports, Revision: id.Revision,
		Member: member(inst),
	}
	if r.Ports == nil {
		r.Ports = []Port{}
	}
	if c := inst.Container; c != nil && c.Labels[ownership.LabelRevision] != "" {
		r.Revision = c.Labels[ownership.LabelRevision]
	}
	for _, a := range inst.Addresses {
		if ip, err := netip.ParseAddr(a); err == nil && ip.Is4() {
			r.addr, r.Address = ip, ip.String()
			break
		}
	}
	switch {
	case plan.ReplicaAvailability(inst) != plan.Ready:
		r.Reason = plan.NotReadyReason(inst)
	case !r.addr.IsValid():
		r.Reason = ReasonNoAddress
	case drained:
		r.Reason = ReasonDrained
	default:
		r.Ready = true
	}
	return r
}

// member is the cluster member inst is on, when the observation says (LXD
// reports "none" on a single host).
func member(inst *plan.Instance) string {
	if inst.Location == "none" {
		return ""
	}
	return inst.Location
}
