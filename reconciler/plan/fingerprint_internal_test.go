package plan

import (
	"encoding/json"
	"github.com/berth-gitops/berth/ownership"
	"testing"
)

// The hand-written encoder must write the JSON encoding/json would (without
// its HTML escaping), so the fingerprint's documented form holds.
func TestCanonEncoderMatchesJSON(t *testing.T) {
	inst := converged(web, 1)
	inst.Config["cloud-init.user-data"] = "#cloud-config\n\truncmd: [\"echo \\\\ hi\"]\r\x01"
	inst.Config[ownership.KeyConfigKeys] += ",cloud-init.user-data,limits.cpu"
	inst.Devices = map[string]map[string]string{"b": {"type": "disk", "path": "/x"}, "a": {"type": "none"}}
	var e canonEncoder
	e.instance(&inst)

	// What planning reads of the config: no volatile.*, image.* or revision.
	cfg := map[string]string{}
	for _, k := range append(fingerprintKeys, "cloud-init.user-data", "limits.cpu", "limits.memory", "security.nesting") {
		if v, ok := inst.Config[k]; ok {
			cfg[k] = v
		}
	}
	type fpContainer struct {
		Name  string `json:"name"`
		ID    string `json:"id"`
		Image string `json:"image"`
		State string `json:"state"`
		Hash  string `json:"hash"`
	}
	want := struct {
		Name        string                       `json:"name"`
		Status      string                       `json:"status"`
		Config      map[string]string            `json:"config"`
		Profiles    []string                     `json:"profiles"`
		Devices     map[string]map[string]string `json:"devices"`
		Container   *fpContainer                 `json:"container"`
		DockerError bool                         `json:"dockerError"`
		BaseImage   string                       `json:"baseImage,omitempty"`
	}{inst.Name, inst.Status, cfg, inst.Profiles, inst.Devices,
		&fpContainer{inst.Container.Name, inst.Container.ID, inst.Container.Image, inst.Container.State, inst.Container.Labels[ownership.LabelContainerHash]}, false, inst.BaseImage}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(e.buf); got != string(b)+"\n" {
		t.Errorf("canonical encoding differs:\n got %s\nwant %s", got, b)
	}
}
