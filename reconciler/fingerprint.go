package reconciler

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
)

// fpInstance is the part of an observed instance the plan depends on. It
// leaves out what changes without changing the plan (volatile.* keys,
// health, restart counts, error texts, foreign containers), so that a plan
// goes stale only when something it decided from has moved.
type fpInstance struct {
	Name        string                       `json:"name"`
	Status      string                       `json:"status"`
	Config      map[string]string            `json:"config"`
	Profiles    []string                     `json:"profiles"`
	Devices     map[string]map[string]string `json:"devices"`
	Container   *fpContainer                 `json:"container"`
	DockerError bool                         `json:"dockerError"`
}

type fpContainer struct {
	Name   string            `json:"name"`
	ID     string            `json:"id"`
	Image  string            `json:"image"`
	State  string            `json:"state"`
	Labels map[string]string `json:"labels"`
}

// fingerprint hashes the canonical JSON (sorted keys, instances by name)
// of the instances that are berth's or that clash with a name it wants.
func (pl *planner) fingerprint() string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	for _, inst := range pl.instances {
		if inst.Config[KeyOwner] != pl.policy.Owner && !pl.wanted[inst.Name] {
			continue
		}
		fp := fpInstance{
			Name:        inst.Name,
			Status:      inst.Status,
			Config:      withoutVolatile(inst.Config),
			Profiles:    inst.Profiles,
			Devices:     inst.Devices,
			DockerError: inst.DockerError != "",
		}
		if c := inst.Container; c != nil {
			fp.Container = &fpContainer{Name: c.Name, ID: c.ID, Image: c.Image, State: c.State, Labels: c.Labels}
		}
		// Encoding plain strings, maps and slices cannot fail.
		_ = enc.Encode(fp)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// withoutVolatile returns cfg without volatile.* keys, copying only when
// there is one to drop.
func withoutVolatile(cfg map[string]string) map[string]string {
	n := 0
	for k := range cfg {
		if isVolatile(k) {
			n++
		}
	}
	if n == 0 {
		return cfg
	}
	out := make(map[string]string, len(cfg)-n)
	for k, v := range cfg {
		if !strings.HasPrefix(k, "volatile.") {
			out[k] = v
		}
	}
	return out
}
