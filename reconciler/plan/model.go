// Package plan is berth's pure core: it turns what Git says (Desired) and
// what LXD and Docker report (Observed) into a Plan, an ordered, explained
// list of steps (MakePlan), and derives the status people read
// (BuildStatus). Values in, a value out: no I/O, no clock, no randomness,
// no goroutines — TestPurity fails if an import would allow them. Applying
// a plan is package reconciler's job. See ../README.md for the whole flow.
package plan

import (
	"github.com/berth-gitops/berth/ownership"
	"slices"
	"strings"
	"time"

	"github.com/berth-gitops/berth/spec"
)

// DefaultOwner is Policy.Owner when none is set.
const DefaultOwner = "berth"

// DefaultMaxPruneFraction is Policy.MaxPruneFraction when none is set.
const DefaultMaxPruneFraction = 0.5

// Desired is what Git says at one revision.
type Desired struct {
	// Revision is the Git SHA the apps came from.
	Revision string `json:"revision"`
	// Apps are the valid apps of this revision.
	Apps []spec.App `json:"apps"`
	// HeldApps are apps whose spec is invalid at this revision. They keep
	// their last applied state: no steps at all, and never pruned.
	HeldApps []string `json:"heldApps,omitempty"`
	// PruneBlocked, when not empty, says why this run must prune nothing
	// (e.g. "apps/x.yaml could not be read as specs": a file that did not
	// parse, a symlink, or a file over the size limit; an app may have
	// vanished only because its file could not be read).
	PruneBlocked string `json:"pruneBlocked,omitempty"`
}

// Observed is the live state: every instance the observer saw. It is the
// format `berth plan --observed FILE.json` reads.
type Observed struct {
	// Instances holds berth's instances, other owners' and unowned ones
	// alike; the planner decides which are its own. Order does not matter.
	Instances []Instance `json:"instances"`
	// Images are the LXD server's images with their aliases: the planner
	// compares an alias's current fingerprint with each replica's
	// BaseImage. nil when they were not observed (then base images are
	// not compared).
	Images []Image `json:"images,omitempty"`
	// At is when the world was observed: the planner's only notion of
	// time (periodic re-provisioning, the age of base images). Zero means
	// unknown: nothing time-based is planned.
	At time.Time `json:"at,omitzero"`
	// Members are the LXD cluster's members; nil on a single host (then
	// placement plays no part).
	Members []Member `json:"members,omitempty"`
	// Volumes are the LXD custom storage volumes berth owns, and those
	// named like a replica's volume whoever owns them (a clash is a
	// conflict). Order does not matter.
	Volumes []Volume `json:"volumes,omitempty"`
	// Pools are the names of the LXD storage pools; nil when they were
	// not observed (then a volume's pool is not checked before apply).
	Pools []string `json:"pools,omitempty"`
}

// Member is one member of an LXD cluster.
type Member struct {
	Name string `json:"name"`
	// Status is LXD's: Online, Offline, Evacuated, ...; only Online
	// members get replicas, and replicas on an Offline one are
	// unreachable.
	Status string `json:"status"`
	// Groups are the cluster groups the member is in.
	Groups []string `json:"groups,omitempty"`
	// Since is when the member was first seen in its Status (for an
	// offline member, since when it is lost), for
	// placement.replaceUnreachable; zero when unknown.
	Since time.Time `json:"since,omitzero"`
}

// MemberOnline is the status of a member that takes instances.
const MemberOnline = "Online"

// Image is one image on the LXD server.
type Image struct {
	Fingerprint string   `json:"fingerprint"`
	Aliases     []string `json:"aliases,omitempty"`
	// Created is when the image was built (LXD's created_at, or
	// uploaded_at when the image does not say).
	Created time.Time `json:"created,omitzero"`
}

// Instance is one LXD instance as observed.
type Instance struct {
	// Name is the LXD instance name; berth's are <app>-<slot>.
	Name string `json:"name"`
	// Status is LXD's status: Running, Stopped, Frozen, Error, ...
	Status string `json:"status"`
	// Config is the instance's local config (not expanded from profiles).
	// It includes the user.berth.* keys; volatile.* keys are ignored.
	Config map[string]string `json:"config"`
	// Profiles are the instance's profiles, in order.
	Profiles []string `json:"profiles"`
	// Devices are the instance's local devices (not from profiles).
	Devices map[string]map[string]string `json:"devices,omitempty"`
	// Container is berth's app container in the instance, found by its
	// labels; nil when there is none or Docker was not observed.
	Container *Container `json:"container,omitempty"`
	// ForeignContainers names containers without berth labels: reported,
	// never touched.
	ForeignContainers []string `json:"foreignContainers,omitempty"`
	// StaleContainers names berth's containers of the instance's app other
	// than Container (a "<app>-next" left by a killed rollout): drift, which
	// the plan removes.
	StaleContainers []string `json:"staleContainers,omitempty"`
	// DockerError is set when Docker could not be reached in a running
	// instance; the container is then unknown, not missing.
	DockerError string `json:"dockerError,omitempty"`
	// DockerUnknown says why Docker's state in a running instance is
	// unknown, which is no evidence against it: LXD could not run the
	// command that reaches Docker (the exec failed to start, or LXD did
	// not answer), or the instance is shutting down. The planner plans
	// nothing that depends on the container and waits for a later look.
	DockerUnknown string `json:"dockerUnknown,omitempty"`
	// Addresses are the instance's IPv4 addresses of global scope, eth0's
	// first: the replica's address is Addresses[0]. Empty when the
	// instance has no network, no lease yet, or is not running.
	Addresses []string `json:"addresses,omitempty"`
	// Location is the cluster member the instance is on ("" or "none" on
	// a single host). Informative: planning never reads it.
	Location string `json:"location,omitempty"`
	// ClosedPorts are the app's declared TCP ports ("8080/tcp") that did
	// not accept a connection on Addresses[0] when observed, from where
	// berth runs: the replica is not ready (ReplicaAvailability).
	ClosedPorts []string `json:"closedPorts,omitempty"`
	// PortsUnchecked, when set, says why the declared TCP ports were not
	// checked ("no IPv4 address", "10.0.0.5 is not reachable from here:
	// ..."); readiness then rests on the container's healthcheck alone.
	PortsUnchecked string `json:"portsUnchecked,omitempty"`
	// BaseImage is the fingerprint of the image the instance was created
	// from (LXD's volatile.base_image).
	BaseImage string `json:"baseImage,omitempty"`
	// Ephemeral is set for an LXD ephemeral instance (deleted when it
	// stops).
	Ephemeral bool `json:"ephemeral,omitempty"`
	// Privileged is the instance's effective security.privileged, its
	// profiles' included: status flags it.
	Privileged bool `json:"privileged,omitempty"`
}

// Address is the replica's address, Addresses[0], or "".
func (i *Instance) Address() string {
	if len(i.Addresses) == 0 {
		return ""
	}
	return i.Addresses[0]
}

// Container is a Docker container as observed.
type Container struct {
	// Name is the container's name (without Docker's leading slash).
	Name string `json:"name"`
	// ID is Docker's full container id.
	ID string `json:"id"`
	// Image is the image reference the container was created from.
	Image string `json:"image"`
	// State is Docker's state: created, running, paused, restarting,
	// exited, dead.
	State string `json:"state"`
	// Health is "" (no healthcheck), starting, healthy or unhealthy.
	Health string `json:"health,omitempty"`
	// RestartCount is Docker's restart count, for status; planning
	// ignores it.
	RestartCount int `json:"restartCount,omitempty"`
	// Labels are the container's berth.* labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// Policy holds the planner's knobs that are not part of any app.
type Policy struct {
	// Owner is the value of user.berth.owner that makes an instance ours;
	// default "berth". Several config repos share one LXD by using
	// different owners.
	Owner string `json:"owner"`
	// AllowMassPrune lifts the prune guards (zero apps, MaxPruneFraction).
	// It never overrides Desired.PruneBlocked.
	AllowMassPrune bool `json:"allowMassPrune,omitempty"`
	// MaxPruneFraction is the largest share of owned instances that
	// pruning removed apps may delete in one run; default 0.5 (when <= 0).
	MaxPruneFraction float64 `json:"maxPruneFraction,omitempty"`
}

// withDefaults fills the zero fields.
func (p Policy) withDefaults() Policy {
	if p.Owner == "" {
		p.Owner = DefaultOwner
	}
	if p.MaxPruneFraction <= 0 {
		p.MaxPruneFraction = DefaultMaxPruneFraction
	}
	return p
}

// ManagedConfig returns everything berth sets in the config of the
// instance of app in slot: the spec's LXD config plus the user.berth.*
// keys. The executor creates instances with it; the planner compares
// live instances against it (all but KeyRevision, which is informative).
// Keys whose value would be empty are left out: LXD drops empty keys.
func ManagedConfig(app spec.App, owner, revision string, slot int) map[string]string {
	pairs, _ := managedPairs(&app, app.Spec.System.LXDConfig(), app.Spec.System.Hash(), owner, revision, slot)
	out := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		out[kv[0]] = kv[1]
	}
	return out
}

// managedPairs is ManagedConfig as key/value pairs sorted by key, given
// the parts the planner computes once per app, plus the KeyConfigKeys
// value. A negative slot or an empty revision leaves that key out.
func managedPairs(app *spec.App, lxdConfig map[string]string, sysHash, owner, revision string, slot int) (pairs [][2]string, configKeys string) {
	pairs = make([][2]string, 0, len(lxdConfig)+7)
	for k, v := range lxdConfig {
		// spec validation rejects these; never let a spec overwrite ours.
		if !strings.HasPrefix(k, ownership.KeyPrefix) && v != "" {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	sortPairs(pairs)
	var b strings.Builder
	n := len(pairs)
	for _, kv := range pairs {
		n += len(kv[0])
	}
	b.Grow(n)
	for i, kv := range pairs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[0])
	}
	configKeys = b.String()
	pairs = append(pairs, ownership.Instance{
		Owner: owner, App: app.Metadata.Name, Slot: slot, SystemHash: sysHash,
		Image: app.Spec.System.Image, ConfigKeys: configKeys, Revision: revision,
		SystemOnly: !app.Spec.HasContainer(),
	}.Pairs()...)
	if deps := dependsOnValue(app); deps != "" {
		pairs = append(pairs, [2]string{ownership.KeyDependsOn, deps})
	}
	sortPairs(pairs)
	return pairs, configKeys
}

// RemovedConfigKeys returns, sorted, the keys berth once set on an
// instance from a spec (listed in its KeyConfigKeys) that the app's spec
// no longer sets and that are still present: the executor deletes them
// when it updates the instance in place.
func RemovedConfigKeys(observed map[string]string, app spec.App) []string {
	return removedConfigKeys(observed, app.Spec.System.LXDConfig(), "")
}

// removedConfigKeys is RemovedConfigKeys given the spec's LXD config and,
// if known, the KeyConfigKeys value the spec gives: when the instance
// records the same list, nothing was dropped.
func removedConfigKeys(observed, want map[string]string, wantList string) []string {
	list := observed[ownership.KeyConfigKeys]
	if list == "" || list == wantList {
		return nil
	}
	var out []string
	for k := range strings.SplitSeq(list, ",") {
		k = strings.TrimSpace(k)
		if k == "" || strings.HasPrefix(k, ownership.KeyPrefix) || isVolatile(k) {
			continue
		}
		if want[k] != "" {
			continue
		}
		if observed[k] == "" {
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func isVolatile(key string) bool { return strings.HasPrefix(key, "volatile.") }

// NewDesired turns a spec load into the planner's input: invalid apps are
// held, and a file that did not parse at all blocks pruning, because the
// apps it held cannot be known.
func NewDesired(revision string, res *spec.Result) Desired {
	d := Desired{Revision: revision, Apps: res.Apps, HeldApps: res.InvalidApps}
	if len(res.Unparsable) > 0 {
		files := slices.Sorted(slices.Values(res.Unparsable))
		d.PruneBlocked = strings.Join(files, ", ") + " could not be read as specs (see the diagnostics)"
	} else if len(res.Unidentified) > 0 {
		files := slices.Sorted(slices.Values(res.Unidentified))
		d.PruneBlocked = strings.Join(files, ", ") + " holds an app whose name cannot be read"
	}
	return d
}
