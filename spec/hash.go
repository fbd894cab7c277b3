package spec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
)

// HashLen is the number of hex digits kept from a SHA-256 for the hashes
// berth stores in LXD keys and Docker labels: enough to never collide among
// one app's revisions, short enough to read in `lxc config show`.
const HashLen = 16

// Hash is the canonical hash of the system part. It is computed from the
// defaulted value with encoding/json, which sorts map keys, so key order in
// the YAML and spelled-out defaults do not change it.
//
// Provision, ImageUpdate, Ports and Placement are left out: a provision change is
// re-run in place (it has its own hash, Provision.Hash), the image update
// policy and the declared ports change nothing in the instance, and a spec
// without them hashes as it did before they existed (TestHashesPinned).
//
// Of Volumes only the name, path and pool count: they make the instance's
// disk devices. A size or a snapshot schedule changes the volume in place.
func (s System) Hash() string {
	s.Provision, s.ImageUpdate, s.Ports, s.Placement = nil, "", nil, nil
	if len(s.Volumes) > 0 {
		vols := make([]SystemVolume, len(s.Volumes))
		for i, v := range s.Volumes {
			vols[i] = SystemVolume{Name: v.Name, Path: v.Path, Pool: v.Pool}
		}
		s.Volumes = vols
	}
	return canonicalHash(s)
}

// Hash is the canonical hash of what a provision puts in the instance: the
// files' destinations, modes, owners and content digests, and the command.
// A change of it re-runs the provision. Where a file comes from in the repo,
// the timeout, the period and restartContainer are left out: changing them
// changes nothing in the instance. "" for a nil provision.
func (p *Provision) Hash() string {
	if p == nil {
		return ""
	}
	type file struct {
		Path, Mode, Owner, Digest string
	}
	files := make([]file, len(p.Files))
	for i, f := range p.Files {
		digest := f.Digest
		if f.Secret {
			// The ciphertext changes at every re-encryption; the value's
			// HMAC changes only with the value.
			digest = "secret:" + string(f.MAC)
		}
		files[i] = file{f.Path, f.Mode, f.Owner, digest}
	}
	return canonicalHash(struct {
		Files []file
		Run   []string
	}{files, p.Run})
}

// Hash is the canonical hash of the container part; any change to it
// replaces the app container.
//
// Ports are left out: they do not change the container Docker runs (it
// uses the instance's network and publishes nothing), so declaring,
// renaming or dropping a port replaces no container, and a spec without
// ports hashes as it did before ports existed (TestHashesPinned).
//
// Secret files enter it with their MAC, never their value: a changed
// secret replaces the container like any other change.
func (c Container) Hash() string {
	c.Ports = nil
	if len(c.SecretFiles) == 0 {
		return canonicalHash(c)
	}
	macs := make([]string, len(c.SecretFiles))
	for i, s := range c.SecretFiles {
		macs[i] = string(s.MAC)
	}
	return canonicalHash(struct {
		Container  Container
		SecretMACs []string
	}{c, macs})
}

// SecretTags are a short tag of each secret file's value, by target: what
// the container's ownership.LabelSecrets records, so that a plan can say
// which secret changed. A tag is a hash of the value's MAC, so it changes
// with the value and tells nothing about it. nil without secret files.
func (c Container) SecretTags() map[string]string {
	if len(c.SecretFiles) == 0 {
		return nil
	}
	tags := make(map[string]string, len(c.SecretFiles))
	for _, f := range c.SecretFiles {
		sum := sha256.Sum256([]byte("berth secret tag\x00" + string(f.MAC)))
		tags[f.Target] = hex.EncodeToString(sum[:])[:HashLen]
	}
	return tags
}

func canonicalHash(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain strings, maps and slices are in these types.
		panic("spec: canonical hash: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:HashLen]
}

// LXD config keys that berth derives from typed spec fields.
const (
	KeyLimitsCPU     = "limits.cpu"
	KeyLimitsMemory  = "limits.memory"
	KeyCloudInitUser = "cloud-init.user-data"
)

// LXDConfig returns the instance config keys the spec asks for: Config plus
// the keys derived from Limits and CloudInit. It never contains user.berth.*
// keys; those are the reconciler's. The result is a new map.
func (s System) LXDConfig() map[string]string {
	out := make(map[string]string, len(s.Config)+3)
	maps.Copy(out, s.Config)
	if s.Limits.CPU != "" {
		out[KeyLimitsCPU] = s.Limits.CPU
	}
	if s.Limits.Memory != "" {
		out[KeyLimitsMemory] = s.Limits.Memory
	}
	if s.CloudInit != "" {
		out[KeyCloudInitUser] = s.CloudInit
	}
	return out
}
