package plan

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
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
	// Desired is spec.replicas; for an app held at its last applied state
	// (invalid spec) the replicas it has, for an app gone from Git 0, and
	// -1 only when no desired state was given at all.
	Desired int    `json:"desired"`
	Ready   int    `json:"ready"`
	Sync    string `json:"sync"`
	Health  string `json:"health"`
	// Drift lists the plan's steps for the app: "web-1 update-in-place
	// (system.limits.memory)", ...
	Drift []string `json:"drift,omitempty"`
	// Blocked says why the app's steps wait for its dependencies
	// ("blocked by db: 1/3 ready (db-2: container health starting)").
	Blocked string `json:"blocked,omitempty"`
	// LastError is the most telling problem seen on the app's replicas.
	LastError string        `json:"lastError,omitempty"`
	Replicas  []ReplicaView `json:"replicas"`
	// RetainedVolumes are the app's volumes attached to no instance: kept
	// by onScaleDown or onAppDelete: retain, they hold data that a
	// scale-up or the app's return brings back, and take room until then.
	RetainedVolumes []VolumeView `json:"retainedVolumes,omitempty"`
}

// VolumeView is one of an app's volumes in the status.
type VolumeView struct {
	// Name is the LXD volume, <app>-<volume>-<slot>; Volume its name in
	// system.volumes.
	Name   string `json:"name"`
	Volume string `json:"volume"`
	Slot   int    `json:"slot"`
	Pool   string `json:"pool"`
	// Size is its quota as LXD has it ("1GiB"); Bytes the same in bytes
	// (0 when it has none).
	Size  string `json:"size,omitempty"`
	Bytes uint64 `json:"bytes,omitempty"`
	// Member is the cluster member that holds it on a local pool.
	Member string `json:"member,omitempty"`
}

// ReplicaView is one replica as observed.
type ReplicaView struct {
	Instance string `json:"instance"`
	Slot     int    `json:"slot"`
	// Status is LXD's instance status.
	Status string `json:"status"`
	// Revision is the Git SHA the replica runs: its app container's
	// berth.revision label, or the instance's when it has no container.
	Revision string `json:"revision,omitempty"`
	// SystemRevision is the Git SHA last applied to the instance itself
	// (its user.berth.revision key).
	SystemRevision string `json:"systemRevision,omitempty"`
	// Container is the app container's state ("" when none was found).
	Container string `json:"container,omitempty"`
	Health    string `json:"health,omitempty"`
	Image     string `json:"image,omitempty"`
	Ready     bool   `json:"ready"`
	Error     string `json:"error,omitempty"`
	// Address is the replica's IPv4 address ("" when it has none).
	Address string `json:"address,omitempty"`
	// Member is the cluster member the replica is on ("" on a single
	// host).
	Member string `json:"member,omitempty"`
	// ClosedPorts are declared TCP ports that refused connections
	// ("9999/tcp"); the replica is then not ready.
	ClosedPorts []string `json:"closedPorts,omitempty"`
	// PortsUnchecked says why the declared ports were not checked; the
	// readiness is then the healthcheck's alone.
	PortsUnchecked string `json:"portsUnchecked,omitempty"`
	// BaseImage is the fingerprint (first 8 digits) of the image the
	// instance was built from; BaseImageCreated when that image was built,
	// and BaseImageAge how old it was when observed ("12d3h").
	BaseImage        string    `json:"baseImage,omitempty"`
	BaseImageCreated time.Time `json:"baseImageCreated,omitzero"`
	BaseImageAge     string    `json:"baseImageAge,omitempty"`
	// BaseImageOutdated is set when the app's system.image alias now
	// points to another build than the replica's.
	BaseImageOutdated bool `json:"baseImageOutdated,omitempty"`
	// Unobserved is set when the replica's Docker could not be looked at
	// because LXD did not set up the tunnel (Error says why): its state
	// is unknown, not failed.
	Unobserved bool `json:"unobserved,omitempty"`
	// Privileged is the instance's effective security.privileged: a
	// privileged container is root on the host, and status flags it.
	Privileged bool `json:"privileged,omitempty"`
	// Ephemeral is set for an LXD ephemeral instance.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// ProvisionedAt is when the provision last succeeded (RFC 3339).
	ProvisionedAt string `json:"provisionedAt,omitempty"`
}

// BuildStatus derives the status of owner's apps. desired and plan may be
// nil when no desired state is known; then only the live side is shown.
func BuildStatus(owner string, desired *Desired, observed Observed, plan *Plan) Status {
	if owner == "" {
		owner = DefaultOwner
	}
	b := statusBuilder{owner: owner, apps: map[string]*AppStatusView{}, sysImage: map[string]string{}, at: observed.At,
		members: membersByName(observed.Members), aliases: imagesByAlias(observed.Images), images: map[string]*Image{}}
	for i := range observed.Images {
		b.images[observed.Images[i].Fingerprint] = &observed.Images[i]
	}
	st := Status{Owner: owner, Apps: []AppStatusView{}}
	if desired != nil {
		st.Revision = desired.Revision
		b.addDesired(desired)
	}
	b.addReplicas(observed, desired != nil)
	b.addLost(observed)
	b.addRetained(observed, desired != nil)
	if plan != nil {
		b.addDrift(plan)
		st.Conflicts = plan.Conflicts
	}
	for _, n := range slices.Sorted(maps.Keys(b.apps)) {
		v := b.apps[n]
		slices.SortFunc(v.Replicas, func(a, b ReplicaView) int { return a.Slot - b.Slot })
		v.Health, v.LastError = appHealth(v)
		st.Apps = append(st.Apps, *v)
	}
	return st
}

// statusBuilder collects one status, app by app.
type statusBuilder struct {
	owner    string
	apps     map[string]*AppStatusView
	images   map[string]*Image // by fingerprint
	aliases  map[string]*Image // by alias
	sysImage map[string]string // system.image by app
	at       time.Time
	members  map[string]*Member
}

func (b *statusBuilder) get(name string) *AppStatusView {
	if a, ok := b.apps[name]; ok {
		return a
	}
	a := &AppStatusView{App: name, Desired: -1, Sync: SyncUnknown, Replicas: []ReplicaView{}}
	b.apps[name] = a
	return a
}

// addDesired starts every app of Git Synced (held ones Held).
func (b *statusBuilder) addDesired(desired *Desired) {
	for _, a := range desired.Apps {
		v := b.get(a.Metadata.Name)
		v.Desired, v.Sync = a.Spec.Replicas, SyncSynced
		b.sysImage[a.Metadata.Name] = a.Spec.System.Image
	}
	for _, h := range desired.HeldApps {
		b.get(h).Sync = SyncHeld
	}
}

// addReplicas adds owner's well-labelled instances; an app that only LXD
// knows is Orphaned when a desired state was given.
func (b *statusBuilder) addReplicas(observed Observed, haveDesired bool) {
	for i := range observed.Instances {
		inst := &observed.Instances[i]
		if inst.Config[ownership.KeyOwner] != b.owner {
			continue
		}
		app, slot, err := identity(inst)
		if err != nil {
			continue // garbled keys: the plan warns about it
		}
		v := b.get(app)
		if haveDesired && v.Sync == SyncUnknown {
			v.Sync = SyncOrphaned
		}
		r := replicaView(inst, slot)
		r.Member = inst.Location
		if m := b.members[inst.Location]; m != nil && m.Status != MemberOnline {
			r.Ready, r.Error = false, m.unreachable()
		}
		b.baseImage(&r, inst, app)
		if r.Ready {
			v.Ready++
		}
		v.Replicas = append(v.Replicas, r)
	}
	for _, v := range b.apps {
		switch v.Sync {
		case SyncHeld:
			v.Desired = len(v.Replicas) // its last applied state is kept
		case SyncOrphaned:
			v.Desired = 0
		}
	}
}

// addLost adds the replicas of known apps that sit on a lost cluster
// member: LXD knows only their name, status and location, not their keys,
// so they are recognised by name.
func (b *statusBuilder) addLost(observed Observed) {
	for i := range observed.Instances {
		inst := &observed.Instances[i]
		m := b.members[inst.Location]
		if inst.Config[ownership.KeyOwner] != "" || m == nil || m.Status == MemberOnline {
			continue
		}
		cut := strings.LastIndexByte(inst.Name, '-')
		if cut < 0 {
			continue
		}
		v, ok := b.apps[inst.Name[:cut]]
		slot, err := strconv.Atoi(inst.Name[cut+1:])
		if !ok || err != nil || slot < 0 || strconv.Itoa(slot) != inst.Name[cut+1:] {
			continue
		}
		v.Replicas = append(v.Replicas, ReplicaView{
			Instance: inst.Name, Slot: slot, Status: inst.Status, Member: inst.Location,
			Error: m.unreachable(),
		})
	}
}

// addRetained adds owner's volumes that no instance has attached. The
// app of a volume and nothing else (removed from Git, its data kept) is
// Orphaned, as an app with only instances left is.
func (b *statusBuilder) addRetained(observed Observed, haveDesired bool) {
	for _, vol := range observed.Volumes {
		if vol.Config[ownership.KeyOwner] != b.owner || len(vol.AttachedTo) > 0 {
			continue
		}
		id, err := ownership.ParseVolume(vol.Name, vol.Config)
		if err != nil {
			continue // garbled keys: berth volumes shows it
		}
		v := b.get(id.App)
		if haveDesired && v.Sync == SyncUnknown {
			v.Sync, v.Desired = SyncOrphaned, 0
		}
		member := vol.Location
		if member == "none" {
			member = ""
		}
		v.RetainedVolumes = append(v.RetainedVolumes, VolumeView{Name: vol.Name, Volume: id.Name, Slot: id.Slot, Pool: vol.Pool,
			Size: vol.Config["size"], Bytes: spec.VolumeBytes(vol.Config["size"]), Member: member})
	}
	for _, v := range b.apps {
		slices.SortFunc(v.RetainedVolumes, func(a, b VolumeView) int { return strings.Compare(a.Name, b.Name) })
	}
}

// addDrift lists the plan's steps, waiting ones and those no member can
// take included, per app: an app with any is OutOfSync.
func (b *statusBuilder) addDrift(p *Plan) {
	add := func(app, line string) {
		v := b.get(app)
		v.Drift = append(v.Drift, line)
		if v.Sync == SyncSynced {
			v.Sync = SyncOutOfSync
		}
	}
	for _, s := range p.Steps {
		add(s.App, stepDrift(s))
	}
	for _, w := range p.Waiting {
		add(w.App, stepDrift(w.Step)+" waiting: "+w.Why)
	}
	for _, u := range p.Unplaceable {
		add(u.App, u.Instance+" "+u.Action.String()+" cannot be placed: "+u.Why)
	}
	for _, bl := range p.Blocked {
		v := b.get(bl.App)
		v.Blocked = bl.Why
		if v.Sync == SyncSynced {
			v.Sync = SyncOutOfSync
		}
	}
}

// appHealth judges an app from its replicas, and names the first problem.
func appHealth(v *AppStatusView) (health, lastError string) {
	want := v.Desired
	if want < 0 {
		want = len(v.Replicas)
	}
	starting := false
	for _, r := range v.Replicas {
		if r.Health == "starting" {
			starting = true
		}
		if r.Error != "" && lastError == "" {
			lastError = fmt.Sprintf("%s: %s", r.Instance, r.Error)
		}
	}
	switch {
	case v.Ready >= want:
		return HealthHealthy, lastError
	case starting:
		return HealthProgressing, lastError
	case v.Ready == 0:
		return HealthMissing, lastError
	}
	return HealthDegraded, lastError
}

// baseImage fills in what the replica's base image is, how old, and
// whether the app's alias has moved on from it.
func (b *statusBuilder) baseImage(r *ReplicaView, inst *Instance, app string) {
	if inst.BaseImage == "" {
		return
	}
	r.BaseImage = shortFingerprint(inst.BaseImage)
	if img := b.images[inst.BaseImage]; img != nil && !img.Created.IsZero() {
		r.BaseImageCreated = img.Created
		if !b.at.IsZero() && b.at.After(img.Created) {
			r.BaseImageAge = spec.ShortDuration(b.at.Sub(img.Created).Truncate(time.Minute))
		}
	}
	if cur := b.aliases[b.sysImage[app]]; cur != nil && cur.Fingerprint != inst.BaseImage {
		r.BaseImageOutdated = true
	}
}

// replicaView is one owned replica's line, readiness after
// ReplicaAvailability.
func replicaView(inst *Instance, slot int) ReplicaView {
	r := ReplicaView{
		Instance: inst.Name, Slot: slot, Status: inst.Status,
		Revision: inst.Config[ownership.KeyRevision], SystemRevision: inst.Config[ownership.KeyRevision],
		Ready:   ReplicaAvailability(inst) == Ready,
		Address: inst.Address(), ClosedPorts: inst.ClosedPorts, PortsUnchecked: inst.PortsUnchecked,
		Privileged: inst.Privileged, Ephemeral: inst.Ephemeral,
		ProvisionedAt: inst.Config[ownership.KeyProvisionedAt],
	}
	switch {
	case inst.Status != StatusRunning:
		r.Error = "instance " + strings.ToLower(inst.Status)
	case provisionPending(inst):
		r.Error = provisionNotDone
	case systemOnly(inst):
	case inst.DockerUnknown != "":
		r.Error, r.Unobserved = dockerUnknownWord+inst.DockerUnknown, true
	case inst.DockerError != "":
		r.Error = "docker not answering: " + inst.DockerError
	case inst.Container == nil:
		r.Error = "no app container"
	}
	if c := inst.Container; c != nil {
		r.Container, r.Health, r.Image = c.State, c.Health, c.Image
		if rev := c.Labels[ownership.LabelRevision]; rev != "" {
			r.Revision = rev
		}
		switch {
		case r.Error != "":
		case c.State != stateRunning:
			r.Error = "container " + c.State
		case c.Health == "unhealthy":
			r.Error = "container unhealthy"
		}
	}
	if r.Error == "" && len(inst.ClosedPorts) > 0 {
		r.Error = portsWord(inst.ClosedPorts) + " closed on " + orDash(inst.Address())
	}
	return r
}

// stepDrift is a step as one drift line: "web-1 update-in-place
// (system.limits.memory)".
func stepDrift(s Step) string {
	fields := make([]string, 0, len(s.Reasons))
	for _, r := range s.Reasons {
		fields = append(fields, r.Field)
	}
	d := s.Instance + " " + s.Action.String()
	if len(fields) > 0 {
		d += " (" + strings.Join(fields, ", ") + ")"
	}
	return d
}

// replicaSystem is what Text says about a replica's system container:
// its base image and how old it is, whether it is outdated, ephemeral or
// privileged.
func replicaSystem(r ReplicaView) string {
	out := ""
	if r.BaseImage != "" {
		out += ", base image " + r.BaseImage
		if r.BaseImageAge != "" {
			out += " (" + r.BaseImageAge + " old)"
		}
		if r.BaseImageOutdated {
			out += " OUTDATED"
		}
	}
	if r.Ephemeral {
		out += ", ephemeral"
	}
	if r.Privileged {
		out += ", PRIVILEGED"
	}
	return out
}

func onMember(m string) string {
	if m == "" {
		return ""
	}
	return ", on " + m
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
		if a.Blocked != "" {
			fmt.Fprintf(&b, "  %s\n", a.Blocked)
		}
		for _, r := range a.Replicas {
			state := r.Status
			if r.Container != "" {
				state += ", container " + r.Container
				if r.Health != "" {
					state += " (" + r.Health + ")"
				}
			}
			if r.Address != "" {
				state += ", " + r.Address
			}
			if r.Member != "" && r.Member != "none" {
				state += ", on " + r.Member
			}
			if len(r.ClosedPorts) > 0 {
				state += ", closed " + strings.Join(r.ClosedPorts, " ")
			}
			if r.PortsUnchecked != "" {
				state += ", ports not checked: " + r.PortsUnchecked
			}
			state += replicaSystem(r)
			if r.Error != "" && !r.Ready {
				state += ", " + r.Error
			}
			fmt.Fprintf(&b, "  %-18s rev %-12s %s\n", r.Instance, orDash(ShortSHA(r.Revision)), state)
		}
		for _, v := range a.RetainedVolumes {
			fmt.Fprintf(&b, "  retained volume %s (%s of slot %d), %s, pool %s%s\n", v.Name, v.Volume, v.Slot, orDash(v.Size), v.Pool, onMember(v.Member))
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
