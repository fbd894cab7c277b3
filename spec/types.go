// Package spec defines berth's App specification: the types, a strict
// loader that reports every problem with its file:line:col, defaults,
// canonical hashes and a JSON Schema.
//
// The types in this file are the contract other packages build on: the
// reconciler plans from them and the executor creates instances and
// containers from them. They hold the *defaulted* form of a spec: once
// Load has returned an App, every field has its final value.
package spec

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/berth-gitops/berth/secrets"
)

// APIVersion and Kind are the only values accepted in a document header.
const (
	APIVersion = "berth/v1"
	KindApp    = "App"
)

// App is one application: N replicas, each an LXD system container that
// houses exactly one Docker app container.
type App struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       AppSpec  `json:"spec"`

	// Origin is where the document was read from, for messages. It is not
	// part of any hash: moving an app to another file changes nothing.
	Origin Origin `json:"-"`
}

// Origin locates a document in the spec tree.
type Origin struct {
	File string // slash-separated, relative to the spec root
	Line int    // 1-based line of the document's first key
}

// String is "FILE:LINE", with control characters in the file name escaped
// (see EscapeText).
func (o Origin) String() string { return fmt.Sprintf("%s:%d", EscapeText(o.File), o.Line) }

// Metadata names the app. Name is a DNS label; instances are <name>-<slot>.
type Metadata struct {
	Name string `json:"name"`
}

// AppSpec is the desired state of an app.
type AppSpec struct {
	// Replicas is the number of system containers (slots 0..Replicas-1).
	// Zero is valid (scale to zero); the default is 1.
	Replicas int    `json:"replicas"`
	System   System `json:"system"`
	// Container is the app container; its zero value (no image) means a
	// system-only app (see HasContainer).
	Container Container `json:"container,omitzero"`
	Update    Update    `json:"update"`
	// DependsOn are the apps whose replicas must be ready before this
	// app's are created or updated, and which are deleted only after this
	// app's replicas are gone. Not part of any hash: it orders the work,
	// it changes no replica.
	DependsOn []Dependency `json:"dependsOn,omitempty"`
}

// Dependency is one entry of spec.dependsOn.
type Dependency struct {
	// App is the name of another app in the same spec tree.
	App string `json:"app"`
	// MinReady is how many of App's replicas must be ready (default 1).
	MinReady MinReady `json:"minReady"`
	// Timeout is how long the dependent may wait for them before it is
	// held with the reason (default 10m).
	Timeout Duration `json:"timeout"`
}

// MinReady is a number of replicas from 1, or MinReadyAll: every replica
// the dependency's spec asks for.
type MinReady int

// MinReadyAll is minReady: all.
const MinReadyAll MinReady = -1

// Of is how many ready replicas are needed of an app with replicas
// replicas in its spec.
func (m MinReady) Of(replicas int) int {
	if m == MinReadyAll {
		return replicas
	}
	return int(m)
}

func (m MinReady) String() string {
	if m == MinReadyAll {
		return "all"
	}
	return strconv.Itoa(int(m))
}

// MarshalJSON writes "all" or the number, as it is written in a spec.
func (m MinReady) MarshalJSON() ([]byte, error) {
	if m == MinReadyAll {
		return []byte(`"all"`), nil
	}
	return []byte(strconv.Itoa(int(m))), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *MinReady) UnmarshalJSON(b []byte) error {
	if string(b) == `"all"` {
		*m = MinReadyAll
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil || n < 1 || n > MaxReplicas {
		return fmt.Errorf(`minReady must be a number from 1 to %d or "all", got %s`, MaxReplicas, b)
	}
	*m = MinReady(n)
	return nil
}

// System is the LXD system container of each replica.
type System struct {
	// Image is an alias or fingerprint on the LXD server, or
	// "remote:alias" for an image server.
	Image    string   `json:"image"`
	Profiles []string `json:"profiles"` // default [default]
	Limits   Limits   `json:"limits"`
	// Config holds other LXD config keys. user.berth.* is reserved and
	// limits.cpu / limits.memory go through Limits.
	Config map[string]string `json:"config,omitempty"`
	// Devices are LXD devices by name, each a map of device keys.
	Devices map[string]map[string]string `json:"devices,omitempty"`
	// CloudInit becomes cloud-init.user-data. It runs on first boot only,
	// so changing it recreates the instance.
	CloudInit string `json:"cloudInit,omitempty"`
	// Ephemeral makes each replica an LXD ephemeral instance: stopping it
	// deletes it, and berth recreates the missing slot.
	Ephemeral bool `json:"ephemeral,omitempty"`
	// ImageUpdate says what happens when Image is an alias that now points
	// to another build than a replica was created from: ImageUpdateRolling
	// (the default) recreates the replicas under update.maxUnavailable,
	// ImageUpdateManual only reports it. Not part of System.Hash.
	ImageUpdate string `json:"imageUpdate,omitempty"`
	// Provision configures the running instance from the config repo
	// before its app container starts. It has its own hash
	// (Provision.Hash): a change re-runs it in place, never recreates.
	Provision *Provision `json:"provision,omitempty"`
	// Ports are the ports a system-only app (one without a container)
	// listens on, as Container.Ports are for an app with one. Not part of
	// System.Hash.
	Ports []Port `json:"ports,omitempty"`
	// Placement says which LXD cluster members the replicas go to. Not
	// part of System.Hash: a placement change moves replicas through the
	// planner's placement rules, not through a hash.
	Placement *Placement `json:"placement,omitempty"`
	// Volumes are the replica's LXD custom storage volumes, one per slot
	// each, attached at their paths: data that outlives every recreate.
	// Only their names, paths and pools are part of System.Hash (they are
	// the instance's devices); size, snapshots and retention change the
	// volume, never the instance.
	Volumes []SystemVolume `json:"volumes,omitempty"`
}

// SystemVolume is one volume of each replica: an LXD custom storage volume
// named <app>-<name>-<slot>, owned by berth's keys, attached to the system
// container at Path.
type SystemVolume struct {
	// Name is a DNS label, unique in the app.
	Name string `json:"name"`
	// Path is where the volume is mounted in the system container: an
	// absolute, clean path that is no system folder.
	Path string `json:"path"`
	// Size is the volume's quota, in the units of limits.memory. A larger
	// size grows the volume in place; a smaller one is refused.
	Size string `json:"size"`
	// Pool is the LXD storage pool; "" means the pool of the instance's
	// root disk.
	Pool string `json:"pool,omitempty"`
	// Snapshots are LXD's own scheduled snapshots of the volume.
	Snapshots *VolumeSnapshots `json:"snapshots,omitempty"`
	// OnScaleDown and OnAppDelete say what becomes of the volume when its
	// slot is scaled away or its app is removed from Git: VolumeRetain
	// (the default) or VolumeDelete.
	OnScaleDown string `json:"onScaleDown"`
	OnAppDelete string `json:"onAppDelete"`
}

// VolumeSnapshots are a volume's snapshots.schedule and snapshots.expiry,
// which LXD itself runs.
type VolumeSnapshots struct {
	// Schedule is a cron expression or @hourly, @daily, @weekly, ...
	Schedule string `json:"schedule,omitempty"`
	// Expiry is how long LXD keeps a snapshot: "7d", "1w 2d", "12H".
	Expiry string `json:"expiry,omitempty"`
}

// Values of SystemVolume.OnScaleDown and OnAppDelete.
const (
	VolumeRetain = "retain"
	VolumeDelete = "delete"
)

// VolumeFor returns the declared volume whose path is p or a parent of p
// (p is cleaned), and whether there is one: data written at p lives on it.
func (s System) VolumeFor(p string) (SystemVolume, bool) {
	p = path.Clean(p)
	for _, v := range s.Volumes {
		if p == v.Path || strings.HasPrefix(p, strings.TrimSuffix(v.Path, "/")+"/") {
			return v, true
		}
	}
	return SystemVolume{}, false
}

// Values of System.ImageUpdate.
const (
	ImageUpdateRolling = "rolling"
	ImageUpdateManual  = "manual"
)

// Provision is config management from the repo: files copied into the
// instance, then a command run in it.
type Provision struct {
	// Files are copied into the instance first, in order.
	Files []ProvisionFile `json:"files,omitempty"`
	// Run is the command, in exec form, run after the files are in place.
	// It may be empty when the files are all there is.
	Run []string `json:"run,omitempty"`
	// Timeout bounds the whole provision (default DefaultProvisionTimeout).
	Timeout Duration `json:"timeout"`
	// Every re-runs the provision periodically (config management's drift
	// repair), spread over replicas; 0 means only when it changes.
	Every Duration `json:"every,omitempty"`
	// RestartContainer restarts the app container after a re-provision.
	RestartContainer bool `json:"restartContainer,omitempty"`
}

// ProvisionFile is one file copied from the config repo into the instance.
type ProvisionFile struct {
	// Source is the file's slash-separated path relative to the root of
	// the repository (not the spec folder), read at the same revision as
	// the specs. Absolute paths, "..", symlinks and non-regular files are
	// refused.
	Source string `json:"source"`
	// Path is the absolute destination path in the instance.
	Path string `json:"path"`
	// Mode is the file's octal permission bits (default "0644").
	Mode string `json:"mode"`
	// Owner is "uid:gid" in the instance (default "0:0").
	Owner string `json:"owner"`
	// Digest is the SHA-256 (hex) of Content: it is what the provision
	// hash covers, so the hash changes when the file's content does.
	Digest string `json:"digest"`
	// Content is the file's bytes at the revision the spec was read from;
	// for a secret file, the encrypted bytes, never pushed as they are.
	Content []byte `json:"-"`
	// Secret marks a SOPS-encrypted source: the whole decrypted document
	// is written into the instance, onto a tmpfs only (see SecretFile).
	Secret bool `json:"secret,omitempty"`
	// Value and MAC are the decrypted document and its HMAC under the
	// owner's salt, set only when the load had keys (Options.Secrets).
	// Provision.Hash covers MAC instead of Digest, so a re-encryption
	// changes nothing and a new value re-runs the provision.
	Value secrets.Value `json:"-"`
	MAC   MAC           `json:"-"`
}

// HasContainer reports whether the app runs a Docker app container; an app
// without one is a plain managed system.
func (s AppSpec) HasContainer() bool { return s.Container.Image != "" }

// AppPorts are the ports the app declares: the container's, or the
// system's for a system-only app.
func (s AppSpec) AppPorts() []Port {
	if s.HasContainer() {
		return s.Container.Ports
	}
	return s.System.Ports
}

// Limits are the LXD resource limits, patched live on a running instance.
type Limits struct {
	CPU    string `json:"cpu,omitempty"`    // limits.cpu: "1", "2", "0-3"
	Memory string `json:"memory,omitempty"` // limits.memory: "512MiB", "2GB", "50%"
}

// Container is the one Docker app container inside each system container.
// It always runs with network_mode host.
type Container struct {
	// Image is a reference: repo[:tag][@sha256:digest].
	Image   string            `json:"image"`
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// User runs the process as this user ("uid[:gid]" or a name), so the
	// app is not root unless the spec says so.
	User        string       `json:"user,omitempty"`
	Volumes     []Volume     `json:"volumes,omitempty"`
	Healthcheck *Healthcheck `json:"healthcheck,omitempty"`
	// Ports are the ports the app listens on. Docker ignores them (the
	// container shares the instance's network, so there is nothing to
	// publish); readiness and service discovery use them: a replica whose
	// TCP ports do not accept connections is not ready, and each port is
	// an SRV record _<name>._<protocol>.<app>.<zone>. They are not part of
	// the container hash (see Container.Hash): changing them replaces
	// nothing.
	Ports []Port `json:"ports,omitempty"`
	// SecretFiles are put on a tmpfs in the app container, read-only:
	// secrets are files, never env, which docker inspect and /proc show.
	SecretFiles []SecretFile `json:"secretFiles,omitempty"`
}

// SecretFile is one value of a SOPS-encrypted file of the repository (or
// the whole decrypted document when Key is empty), delivered as a file
// at Target in the app container. berth decrypts it in memory, writes it
// onto a tmpfs in the instance and bind-mounts that file, read-only, at
// Target: the bytes never touch a disk, whatever Target is.
type SecretFile struct {
	// File is the encrypted file's slash-separated path relative to the
	// root of the repository, as a provision file's Source.
	File string `json:"file"`
	// Key is a dotted key path in the file (db.password); empty for the
	// whole document.
	Key string `json:"key,omitempty"`
	// Target is the absolute, clean path in the app container, unique in
	// the app (default rule: under /run/secrets, the convention of the
	// official images' _FILE variables).
	Target string `json:"target"`
	// Mode is the file's octal permission bits (default "0400").
	Mode string `json:"mode"`
	// Owner is the numeric "uid:gid" of the file (default "0:0").
	Owner string `json:"owner"`
	// Value is the decrypted secret and MAC its HMAC-SHA256 (hex) under
	// the owner's salt, set only when the load had keys
	// (Options.Secrets). Neither is in the JSON: MAC enters
	// Container.Hash, so a changed secret replaces the container, and a
	// re-encryption of the same value does not.
	Value secrets.Value `json:"-"`
	MAC   MAC           `json:"-"`
}

// Port is one port the app container listens on.
type Port struct {
	// Name is an IANA service name (RFC 6335): at most 15 lowercase
	// letters, digits and '-', at least one letter, no leading, trailing
	// or doubled '-'. It names the SRV record, so it is unique per app.
	Name string `json:"name"`
	// Port is 1 to 65535, unique per protocol within the app.
	Port int `json:"port"`
	// Protocol is "tcp" (default) or "udp". Only TCP ports are checked
	// for readiness.
	Protocol string `json:"protocol"`
}

// String is "8080/tcp".
func (p Port) String() string { return fmt.Sprintf("%d/%s", p.Port, p.Protocol) }

// Protocols of a Port.
const (
	ProtocolTCP = "tcp"
	ProtocolUDP = "udp"
)

// DeclaredPorts returns the ports of each app that declares any, by app
// name: what live.System.SetPorts takes.
func DeclaredPorts(apps []App) map[string][]Port {
	out := make(map[string][]Port, len(apps))
	for _, a := range apps {
		if ports := a.Spec.AppPorts(); len(ports) > 0 {
			out[a.Metadata.Name] = ports
		}
	}
	return out
}

// TCPPorts returns the TCP ports of c, in spec order.
func (c Container) TCPPorts() []Port {
	var out []Port
	for _, p := range c.Ports {
		if p.Protocol == ProtocolTCP {
			out = append(out, p)
		}
	}
	return out
}

// Volume bind-mounts a path of the system container into the app container.
type Volume struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Healthcheck mirrors Docker's: Test is [CMD, ...], [CMD-SHELL, "..."] or [NONE].
type Healthcheck struct {
	Test        []string `json:"test"`
	Interval    Duration `json:"interval,omitempty"`
	Timeout     Duration `json:"timeout,omitempty"`
	StartPeriod Duration `json:"startPeriod,omitempty"`
	Retries     int      `json:"retries,omitempty"`
}

// Update is the rollout policy.
type Update struct {
	// MaxUnavailable is how many replicas may be disrupted at once
	// (default 1): a number, or a percentage of the spec's replicas.
	MaxUnavailable IntOrPercent `json:"maxUnavailable"`
	// HealthTimeout bounds how long a replica may take to become ready
	// (default 2m).
	HealthTimeout Duration `json:"healthTimeout"`
	// Snapshot asks for an LXD snapshot before an instance is deleted or
	// recreated, so an operator can restore it by hand.
	Snapshot bool `json:"snapshot,omitempty"`
	// DrainDelay is how long berth waits, after taking a replica out of
	// DNS and the endpoints, before it disrupts it (recreate, container
	// replace, delete), so that clients' cached answers expire. nil (not
	// written) means the daemon's default, its DNS TTL plus 1s; 0 means
	// no wait. At most MaxDrainDelay. It is not part of any hash.
	DrainDelay *Duration `json:"drainDelay,omitempty"`
}

// IntOrPercent is a number of replicas (2) or a percentage of them
// ("25%"), as Kubernetes' maxUnavailable. Exactly one of N and Percent is
// set in a loaded spec.
type IntOrPercent struct {
	N       int
	Percent int
}

// Count returns n replicas.
func Count(n int) IntOrPercent { return IntOrPercent{N: n} }

// Of is how many of replicas it allows: a percentage rounds down, as in
// Kubernetes, but never below 1, so that a rollout always progresses (25%
// of 3 replicas is 1, not 0). The result is at least 1.
func (v IntOrPercent) Of(replicas int) int {
	if v.Percent > 0 {
		return max(replicas*v.Percent/100, 1)
	}
	return max(v.N, 1)
}

func (v IntOrPercent) String() string {
	if v.Percent > 0 {
		return strconv.Itoa(v.Percent) + "%"
	}
	return strconv.Itoa(v.N)
}

// MarshalJSON writes 2 or "25%", as the spec does.
func (v IntOrPercent) MarshalJSON() ([]byte, error) {
	if v.Percent > 0 {
		return json.Marshal(v.String())
	}
	return json.Marshal(v.N)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (v *IntOrPercent) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*v = IntOrPercent{N: n}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a number or a percentage like \"25%%\", got %s", b)
	}
	p, msg := parsePercent(s)
	if msg != "" {
		return errors.New(msg)
	}
	*v = IntOrPercent{Percent: p}
	return nil
}

// Duration is a time.Duration written as "5s" / "2m" in YAML and JSON.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a Go duration string, so canonical
// hashes and the JSON plan read as "2m0s", not nanoseconds.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON accepts a Go duration string from 0 to MaxDuration.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"5s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	if v < 0 || v > MaxDuration {
		return fmt.Errorf("duration %q is out of range: want 0 to %s", s, ShortDuration(MaxDuration))
	}
	*d = Duration(v)
	return nil
}

// Placement spreads an app's replicas over the members of an LXD cluster.
// On a single host it changes nothing.
type Placement struct {
	// Spread is SpreadMembers (the default): replicas go to different
	// members, balanced, deterministically; a placed replica stays put.
	Spread string `json:"spread,omitempty"`
	// Members, when set, are the only members replicas may go to.
	Members []string `json:"members,omitempty"`
	// Group, when set, is the cluster group replicas must go to.
	Group string `json:"group,omitempty"`
	// ReplaceUnreachable, when set, is how long a replica may stay
	// unreachable (its member offline) before berth builds a replacement
	// on a healthy member, in a new slot.
	ReplaceUnreachable Duration `json:"replaceUnreachable,omitempty"`
}

// SpreadMembers is Placement.Spread's only value (and default).
const SpreadMembers = "members"
