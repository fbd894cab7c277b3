package plan

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strings"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// Placement on an LXD cluster. berth is not a scheduler: it only says
// which member each new replica goes to (LXD's target), so that an app's
// replicas are spread over the members its spec allows. A replica that is
// placed stays put unless its member is no longer allowed.

// placer chooses members for one app's replicas.
type placer struct {
	placement *spec.Placement
	members   map[string]*Member // every member, by name
	order     []string           // the app's allowed, online members, in its tie-break order
	count     map[string]int     // the app's replicas per member, planned ones included
}

// newPlacer returns nil on a single host: nothing to place.
func (pl *planner) newPlacer(app *spec.App, kept []*Instance) *placer {
	if len(pl.members) == 0 {
		return nil
	}
	p := &placer{placement: app.Spec.System.Placement, members: pl.members, count: map[string]int{}}
	for _, name := range pl.memberNames {
		if p.allowed(name) && p.members[name].Status == MemberOnline {
			p.order = append(p.order, name)
		}
	}
	// Ties go to members in an order that differs per app, so that the
	// first replica of every app does not land on the same member.
	if n := len(p.order); n > 0 {
		sum := sha256.Sum256([]byte(app.Metadata.Name))
		k := int(binary.BigEndian.Uint64(sum[:8]) % uint64(n))
		p.order = append(p.order[k:], p.order[:k]...)
	}
	for _, inst := range kept {
		if inst.Location != "" {
			p.count[inst.Location]++
		}
	}
	return p
}

// allowed reports whether the app's placement lets replicas on member.
func (p *placer) allowed(member string) bool {
	pm := p.placement
	if pm == nil {
		return true
	}
	if len(pm.Members) > 0 && !slices.Contains(pm.Members, member) {
		return false
	}
	if pm.Group != "" {
		m := p.members[member]
		if m == nil || !slices.Contains(m.Groups, pm.Group) {
			return false
		}
	}
	return true
}

// pick chooses the member for one more replica: the allowed online member
// with the fewest of the app's replicas, ties in the app's order. "" when
// no member can take it.
func (p *placer) pick() string {
	best := ""
	for _, m := range p.order {
		if best == "" || p.count[m] < p.count[best] {
			best = m
		}
	}
	if best != "" {
		p.count[best]++
	}
	return best
}

// unplaceable records a replica of a that no member can take.
func (pl *planner) unplaceable(a *appPlan, instance string, action Action) {
	pl.plan.Unplaceable = append(pl.plan.Unplaceable, Unplaceable{
		App: a.name, Instance: instance, Action: action, Why: pl.nowhere(a.placer),
	})
}

// nowhere says why p has no member to pick, naming what keeps each member
// out, so that a typo in placement.members reads as one.
func (pl *planner) nowhere(p *placer) string {
	var why []string
	pm := p.placement
	if pm != nil {
		for _, m := range pm.Members {
			if p.members[m] == nil {
				why = append(why, "placement.members: "+m+" is not a cluster member")
			}
		}
	}
	var down []string
	inGroup := false
	for _, name := range pl.memberNames {
		m := p.members[name]
		if pm != nil && len(pm.Members) > 0 && !slices.Contains(pm.Members, name) {
			continue
		}
		if pm != nil && pm.Group != "" && !slices.Contains(m.Groups, pm.Group) {
			continue
		}
		inGroup = true
		down = append(down, name+" "+strings.ToLower(m.Status))
	}
	if pm != nil && pm.Group != "" && !inGroup {
		why = append(why, "placement.group: no allowed member is in group "+pm.Group)
	}
	if len(down) > 0 {
		why = append(why, "allowed members not online: "+strings.Join(down, ", "))
	}
	if len(why) == 0 {
		why = append(why, "the cluster lists no member")
	}
	return strings.Join(why, "; ")
}

// move takes a replica off its member, for a recreate elsewhere.
func (p *placer) move(from string) string {
	p.count[from]--
	return p.pick()
}

// unreachable says why a replica cannot be reached: its member is not
// online. LXD lists such an instance but cannot act on it, so berth plans
// nothing for it, and never builds a second instance of the same name.
func (pl *planner) unreachable(inst *Instance) (string, bool) {
	m := pl.members[inst.Location]
	if m == nil || m.Status == MemberOnline || inst.Location == "" {
		return "", false
	}
	return m.unreachable(), true
}

// lostName says why the name is taken by an instance on a lost member
// whose keys cannot be read: LXD knows only its name, status and location
// until the member is back, so whose it is cannot be known either.
func (pl *planner) lostName(name string) (string, bool) {
	inst := pl.lookup(name)
	if inst == nil || inst.Config[ownership.KeyOwner] != "" {
		return "", false
	}
	why, ok := pl.unreachable(inst)
	if !ok {
		return "", false
	}
	return why + "; its keys cannot be read until it is back", true
}

// unreachable says why a replica on m, which is not online, cannot be
// reached: "unreachable (member m3 offline)".
func (m *Member) unreachable() string {
	return "unreachable (member " + m.Name + " " + strings.ToLower(m.Status) + ")"
}

// misplaced says why a replica must move: its member is no longer one the
// app's placement allows.
func (p *placer) misplaced(inst *Instance) (Reason, bool) {
	if p == nil || inst.Location == "" || p.allowed(inst.Location) {
		return Reason{}, false
	}
	// New is the member recreateOn chooses.
	return Reason{Field: "placement", Old: inst.Location}, true
}

func (pl *planner) indexMembers(members []Member) {
	pl.members = membersByName(members)
	for _, m := range members {
		pl.memberNames = append(pl.memberNames, m.Name)
	}
	slices.SortFunc(pl.memberNames, cmp.Compare[string])
}

// membersByName indexes the cluster's members, for planning and status.
func membersByName(members []Member) map[string]*Member {
	out := make(map[string]*Member, len(members))
	for i := range members {
		out[members[i].Name] = &members[i]
	}
	return out
}

// recreateOn is the member a recreated replica is built on: where it is,
// unless its placement no longer allows that member.
func (p *placer) recreateOn(inst *Instance) string {
	if p == nil {
		return ""
	}
	if inst.Location != "" && p.allowed(inst.Location) {
		return inst.Location
	}
	return p.move(inst.Location)
}

// standIns decides the stand-in replicas of app, which take the slots
// after its spec's replicas: one is built (a reason in due) per replica
// whose member has been offline for longer than
// placement.replaceUnreachable; and keep of those already there stay while
// as many replicas are still not ready — lost, or back but not serving
// yet — so a stand-in is scaled down only once what it stands in for
// serves again. With the members unknown (their list failed) every
// stand-in stays. LXD keeps a lost instance's name (it cannot be deleted
// or recreated while its member is down), so a stand-in never takes it.
func (pl *planner) standIns(app *spec.App, replicas int) (due []Reason, keep int) {
	pm := app.Spec.System.Placement
	if pm == nil || pm.ReplaceUnreachable <= 0 {
		return nil, 0
	}
	notReady, located := 0, false
	for slot := range replicas {
		inst := pl.lookup(ownership.InstanceName(app.Metadata.Name, slot))
		if inst == nil || (inst.Config[ownership.KeyOwner] != "" && inst.Config[ownership.KeyOwner] != pl.policy.Owner) {
			continue
		}
		located = located || (inst.Location != "" && inst.Location != "none")
		why, lost := pl.unreachable(inst)
		if !lost {
			if ReplicaAvailability(inst) != Ready {
				notReady++
			}
			continue
		}
		notReady++
		m := pl.members[inst.Location]
		if pl.at.IsZero() || m.Since.IsZero() || pl.at.Sub(m.Since) < pm.ReplaceUnreachable.D() {
			continue
		}
		if vols := app.Spec.System.Volumes; len(vols) > 0 {
			// Its data is on the lost member's volume: a stand-in would
			// start empty, which is worse than waiting.
			pl.warnf("%s: no stand-in, waiting for member %s (holds volume %s)", inst.Name, inst.Location,
				ownership.VolumeName(app.Metadata.Name, vols[0].Name, slot))
			continue
		}
		due = append(due, Reason{Field: "placement.replaceUnreachable", Old: inst.Name + " " + why + " since " + m.Since.UTC().Format(time.RFC3339), New: "stand-in"})
	}
	extra := 0
	for _, r := range pl.owned[app.Metadata.Name] {
		if r.slot >= replicas {
			extra++
		}
	}
	keep = min(extra, notReady)
	if len(pl.members) == 0 && located && extra > 0 {
		pl.warnf("app %s: the cluster's members are unknown this run: its %d replicas beyond %d are kept", app.Metadata.Name, extra, replicas)
		keep = extra
	}
	slices.SortFunc(due, func(x, y Reason) int { return cmp.Compare(x.Old, y.Old) })
	return due, keep
}
