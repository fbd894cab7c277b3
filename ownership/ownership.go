// Package ownership is the contract of what berth writes on the objects it
// owns: the LXD config keys of its instances, the labels of their app
// containers, and the key of its lease in LXD's server config. berth keeps
// no state of its own; these are its state, so every package reads and
// writes them through this one file. Adding a key means editing this file
// and the README's table.
package ownership

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// LXD config keys berth sets on the instances it owns.
const (
	// KeyPrefix is the prefix of every key berth reserves on an instance
	// (a spec may not set keys under it).
	KeyPrefix = "user.berth."
	// KeyOwner marks an instance as berth's; its value is the owner id
	// (default "berth"; several config repos share one LXD with different
	// owners). berth never changes an instance of another owner.
	KeyOwner = KeyPrefix + "owner"
	// KeyApp is the app the instance is a replica of.
	KeyApp = KeyPrefix + "app"
	// KeySlot is the replica's slot number, in canonical decimal.
	KeySlot = KeyPrefix + "slot"
	// KeySystemHash is spec.System.Hash() of the spec last applied.
	KeySystemHash = KeyPrefix + "system-hash"
	// KeyRevision is the Git SHA last applied. It is informative only: a
	// new revision that leaves the app unchanged changes nothing.
	KeyRevision = KeyPrefix + "revision"
	// KeyImage is system.image as written in the spec: LXD records only the
	// fingerprint, and the plan must say "old → new" in the user's terms.
	KeyImage = KeyPrefix + "image"
	// KeyConfigKeys lists, sorted and comma-separated, the config keys
	// berth set from the spec, so that a key dropped from the spec is
	// deleted rather than left behind.
	KeyConfigKeys = KeyPrefix + "config-keys"
	// KeyProvisionHash is spec.Provision.Hash() of the provision that last
	// succeeded in the instance; KeyProvisionedAt is when (RFC 3339, UTC).
	// KeyProvisionHash is ProvisionPending while a provision runs, and
	// stays so when it failed: the replica is then not ready.
	KeyProvisionHash = KeyPrefix + "provision-hash"
	KeyProvisionedAt = KeyPrefix + "provisioned-at"
	// KeySystemOnly is "true" on a replica of an app without an app
	// container: there is no Docker in it to observe.
	KeySystemOnly = KeyPrefix + "system-only"
	// KeyBackupOf and KeyBackupOwner mark a kept copy of a deleted instance
	// (update.snapshot): disowned, so berth never touches it again.
	KeyBackupOf    = KeyPrefix + "backup-of"
	KeyBackupOwner = KeyPrefix + "backup-owner"
	// KeyDependsOn lists, comma-separated and sorted, the apps the
	// replica's app depends on (spec.dependsOn): an app removed from Git
	// has no spec left, and its replicas still say what must be deleted
	// after them.
	KeyDependsOn = KeyPrefix + "depends-on"
)

// Docker labels berth sets on the app container of each replica. A
// container without LabelApp is foreign: reported, never touched.
const (
	LabelApp           = "berth.app"
	LabelSlot          = "berth.slot"
	LabelContainerHash = "berth.container-hash"
	LabelRevision      = "berth.revision"
	// LabelSecrets is, as a JSON object, a short tag of each secret file's
	// value by target (spec.Container.SecretTags): the plan can then say
	// which secret changed, and the label says nothing about any value.
	// Absent when the container has no secret files.
	LabelSecrets = "berth.secrets"
)

// CheckOwner refuses an owner id that is not a DNS label (lower-case
// letters, digits and inner hyphens, at most 63 characters). The id is
// written into every instance and into the lease key, where "@" and "."
// would let two owners' keys collide.
func CheckOwner(owner string) error {
	ok := len(owner) > 0 && len(owner) <= 63 && owner[0] != '-' && owner[len(owner)-1] != '-'
	for i := 0; ok && i < len(owner); i++ {
		c := owner[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("owner %q must be a DNS label: lower-case letters, digits and inner hyphens, at most 63 characters", owner)
	}
	return nil
}

// LeaseKey is the LXD server config key of owner's lease in project (""
// or "default": the default project). The value is "<holder> <expiry unix
// seconds>". Owners of the same name in two projects are two leases.
func LeaseKey(owner, project string) string { return serverKey("lease.", owner, project) }

// MembersKey is the LXD server config key, next to owner's lease, that
// records since when each cluster member has been lost (not Online), so
// that placement.replaceUnreachable counts from the first time any of
// owner's processes saw it, across restarts. The value is
// "<member>=<unix seconds>" pairs separated by spaces.
func MembersKey(owner, project string) string { return serverKey("members.", owner, project) }

// SaltKey is the LXD server config key of owner's secret salt in project
// ("" or "default": the default project): 64 hex digits, the key of the
// HMAC through which secret values enter hashes and labels. Written once,
// when a secret is first used, and never changed by berth: a new salt
// rolls every replica with a secret once.
func SaltKey(owner, project string) string { return serverKey("secret-salt.", owner, project) }

// serverKey is the server config key of kind for owner in project: the
// server config is global, so the project is part of the name.
func serverKey(kind, owner, project string) string {
	k := KeyPrefix + kind + owner
	if project != "" && project != "default" {
		k += "@" + project
	}
	return k
}

// ProvisionPending is KeyProvisionHash's value from the moment a provision
// starts until it succeeds.
const ProvisionPending = "pending"

// LeasePrefix is the prefix of every lease key.
const LeasePrefix = KeyPrefix + "lease."

// InstanceName is the name of an app's replica in a slot: <app>-<slot>.
func InstanceName(app string, slot int) string {
	return app + "-" + strconv.Itoa(slot)
}

// Instance is what berth records on an instance it owns. The zero value of
// a field means "not recorded".
type Instance struct {
	Owner      string
	App        string
	Slot       int
	SystemHash string
	Image      string
	ConfigKeys string
	Revision   string
	// SystemOnly marks a replica of an app without an app container.
	SystemOnly bool
}

// Pairs returns the instance's keys and values, sorted by key, leaving out
// empty values (LXD drops empty keys) and the slot when it is negative.
func (i Instance) Pairs() [][2]string {
	out := make([][2]string, 0, 7)
	add := func(k, v string) {
		if v != "" {
			out = append(out, [2]string{k, v})
		}
	}
	// In key order, so the result is sorted without sorting.
	add(KeyApp, i.App)
	add(KeyConfigKeys, i.ConfigKeys)
	add(KeyImage, i.Image)
	add(KeyOwner, i.Owner)
	add(KeyRevision, i.Revision)
	if i.Slot >= 0 {
		add(KeySlot, strconv.Itoa(i.Slot))
	}
	add(KeySystemHash, i.SystemHash)
	if i.SystemOnly {
		add(KeySystemOnly, "true")
	}
	return out
}

// Config returns the instance's keys as a config map (see Pairs).
func (i Instance) Config() map[string]string {
	out := map[string]string{}
	for _, kv := range i.Pairs() {
		out[kv[0]] = kv[1]
	}
	return out
}

// ParseInstance reads what berth recorded on the instance called name.
// It fails when the app or slot key is missing, the slot is not a
// canonical decimal ("01", "+1", "-1"), or name is not <app>-<slot>: such
// an instance may carry the owner's key but does not name a replica, and
// berth leaves it alone. The fields it could read are returned with the
// error.
func ParseInstance(name string, config map[string]string) (Instance, error) {
	i := Instance{
		Owner: config[KeyOwner], App: config[KeyApp], Slot: -1,
		SystemHash: config[KeySystemHash], Image: config[KeyImage],
		ConfigKeys: config[KeyConfigKeys], Revision: config[KeyRevision],
		SystemOnly: config[KeySystemOnly] == "true",
	}
	s := config[KeySlot]
	if i.App == "" || s == "" {
		return i, fmt.Errorf("instance %s: its %s/%s keys (%q, %q) do not name a replica", name, KeyApp, KeySlot, i.App, s)
	}
	slot, err := strconv.Atoi(s)
	if err != nil || slot < 0 || strconv.Itoa(slot) != s {
		return i, fmt.Errorf("instance %s: %s %q is not a slot number", name, KeySlot, s)
	}
	i.Slot = slot
	if !isInstanceName(name, i.App, s) {
		return i, fmt.Errorf("instance %s is labelled as %s", name, InstanceName(i.App, slot))
	}
	return i, nil
}

// isInstanceName reports whether name is InstanceName(app, slot), slot
// given in canonical decimal, without building the name: this runs for
// every owned instance on every plan.
func isInstanceName(name, app, slot string) bool {
	return len(name) == len(app)+1+len(slot) &&
		name[:len(app)] == app && name[len(app)] == '-' && name[len(app)+1:] == slot
}

// Stale returns berth's keys in observed that set (what berth would set
// now) does not contain, sorted: left alone they would describe a spec
// that is gone. The owner key is never stale: it is what makes the
// instance berth's; nor are the provision keys: they record what was run
// in the instance, not what the spec asks.
func Stale(observed, set map[string]string) []string {
	var out []string
	for k := range observed {
		if strings.HasPrefix(k, KeyPrefix) && k != KeyOwner && k != KeyProvisionHash && k != KeyProvisionedAt && !strings.HasPrefix(k, LeasePrefix) {
			if _, ok := set[k]; !ok {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Container is what berth records on an app container.
type Container struct {
	App      string
	Slot     int
	Hash     string
	Revision string
	// Secrets are the tags of the secret files by target (LabelSecrets).
	Secrets map[string]string
}

// Labels returns the container's labels.
func (c Container) Labels() map[string]string {
	l := map[string]string{
		LabelApp:           c.App,
		LabelSlot:          strconv.Itoa(c.Slot),
		LabelContainerHash: c.Hash,
		LabelRevision:      c.Revision,
	}
	if len(c.Secrets) > 0 {
		b, _ := json.Marshal(c.Secrets) // a map of strings, sorted by key
		l[LabelSecrets] = string(b)
	}
	return l
}

// SecretTags reads LabelSecrets: nil when absent or garbled.
func SecretTags(labels map[string]string) map[string]string {
	var tags map[string]string
	if v := labels[LabelSecrets]; v != "" && json.Unmarshal([]byte(v), &tags) != nil {
		return nil
	}
	return tags
}

// ParseContainer reads berth's labels; ok is false for a foreign container
// (no LabelApp).
func ParseContainer(labels map[string]string) (c Container, ok bool) {
	app, ok := labels[LabelApp]
	if !ok {
		return Container{}, false
	}
	slot, err := strconv.Atoi(labels[LabelSlot])
	if err != nil {
		slot = -1
	}
	return Container{App: app, Slot: slot, Hash: labels[LabelContainerHash], Revision: labels[LabelRevision], Secrets: SecretTags(labels)}, true
}

// Keys berth sets on the LXD custom storage volumes it owns
// (spec.system.volumes), besides KeyOwner, KeyApp and KeySlot, which mean
// what they mean on an instance.
const (
	// KeyVolume is the volume's name in the spec.
	KeyVolume = KeyPrefix + "volume"
	// KeyOnAppDelete is the volume's onAppDelete: it is read when the app
	// is gone from Git, and with it its spec.
	KeyOnAppDelete = KeyPrefix + "on-app-delete"
)

// VolumeName is the LXD name of a replica slot's volume:
// <app>-<volume>-<slot>.
func VolumeName(app, volume string, slot int) string {
	return app + "-" + volume + "-" + strconv.Itoa(slot)
}

// Volume is what berth records on a volume it owns.
type Volume struct {
	Owner, App, Name string
	Slot             int
	OnAppDelete      string
}

// Config returns the volume's keys as a config map.
func (v Volume) Config() map[string]string {
	out := map[string]string{KeyOwner: v.Owner, KeyApp: v.App, KeyVolume: v.Name, KeySlot: strconv.Itoa(v.Slot)}
	if v.OnAppDelete != "" {
		out[KeyOnAppDelete] = v.OnAppDelete
	}
	return out
}

// ParseVolume reads what berth recorded on the volume called name. It
// fails when the keys are missing, the slot is not canonical, or name is
// not VolumeName of them: such a volume is not a slot's, and berth
// attaches and deletes it never.
func ParseVolume(name string, config map[string]string) (Volume, error) {
	v := Volume{Owner: config[KeyOwner], App: config[KeyApp], Name: config[KeyVolume], Slot: -1, OnAppDelete: config[KeyOnAppDelete]}
	s := config[KeySlot]
	if v.App == "" || v.Name == "" || s == "" {
		return v, fmt.Errorf("volume %s: its %s/%s/%s keys (%q, %q, %q) do not name a replica's volume", name, KeyApp, KeyVolume, KeySlot, v.App, v.Name, s)
	}
	slot, err := strconv.Atoi(s)
	if err != nil || slot < 0 || strconv.Itoa(slot) != s {
		return v, fmt.Errorf("volume %s: %s %q is not a slot number", name, KeySlot, s)
	}
	v.Slot = slot
	if want := VolumeName(v.App, v.Name, slot); name != want {
		return v, fmt.Errorf("volume %s is labelled as %s", name, want)
	}
	return v, nil
}
