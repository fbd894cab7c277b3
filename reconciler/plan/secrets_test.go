package plan

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// withSecret is web with a secret file whose value has the MAC mac.
func withSecret(app spec.App, target, mac string) spec.App {
	return with(app, func(a *spec.App) {
		a.Spec.Container.SecretFiles = append(append([]spec.SecretFile(nil), a.Spec.Container.SecretFiles...), spec.SecretFile{
			File: "secrets/web.enc.yaml", Key: "db.password", Target: target, Mode: "0400", Owner: "0:0", MAC: spec.MAC(mac),
		})
	})
}

// convergedWithSecrets is converged() with the secret label the engine
// writes.
func convergedWithSecrets(app spec.App, slot int) Instance {
	inst := converged(app, slot)
	if tags := app.Spec.Container.SecretTags(); tags != nil {
		b, _ := json.Marshal(tags)
		inst.Container.Labels[ownership.LabelSecrets] = string(b)
	}
	return inst
}

// A changed secret replaces the container, one replica at a time under
// maxUnavailable, and the plan names the secret by target only.
func TestSecretChangeRolls(t *testing.T) {
	const target = "/run/secrets/db_password"
	const oldMAC, newMAC = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9", "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
	web := withSecret(testApp("web", 2), target, oldMAC)
	observed := []Instance{convergedWithSecrets(web, 0), convergedWithSecrets(web, 1)}
	tests := []struct {
		name    string
		desired spec.App
		want    []string
	}{
		{"unchanged", web, []string{}},
		{"value changed", withSecret(testApp("web", 2), target, newMAC), []string{
			"1 web-0 replace-container (container.secretFiles[/run/secrets/db_password]:  → changed)",
			"2 web-1 replace-container (container.secretFiles[/run/secrets/db_password]:  → changed)",
		}},
		{"secret added", withSecret(web, "/run/secrets/api_token", newMAC), []string{
			"1 web-0 replace-container (container.secretFiles[/run/secrets/api_token]:  → added)",
			"2 web-1 replace-container (container.secretFiles[/run/secrets/api_token]:  → added)",
		}},
		{"secret removed", testApp("web", 2), []string{
			"1 web-0 replace-container (container.secretFiles[/run/secrets/db_password]:  → removed)",
			"2 web-1 replace-container (container.secretFiles[/run/secrets/db_password]:  → removed)",
		}},
		{"image and secret changed", with(withSecret(testApp("web", 2), target, newMAC), func(a *spec.App) { a.Spec.Container.Image = "registry.example/web:2" }), []string{
			"1 web-0 replace-container (container.image: registry.example/web:1 → registry.example/web:2; container.secretFiles[/run/secrets/db_password]:  → changed)",
			"2 web-1 replace-container (container.image: registry.example/web:1 → registry.example/web:2; container.secretFiles[/run/secrets/db_password]:  → changed)",
		}},
		// A mode change is no new value: the hash says the container
		// changed, and berth diff says how.
		{"mode changed", with(web, func(a *spec.App) {
			a.Spec.Container.SecretFiles = []spec.SecretFile{{File: "secrets/web.enc.yaml", Key: "db.password", Target: target, Mode: "0440", Owner: "0:0", MAC: oldMAC}}
		}), []string{
			"1 web-0 replace-container (container-hash: " + web.Spec.Container.Hash() + " → ",
			"2 web-1 replace-container (container-hash: " + web.Spec.Container.Hash() + " → ",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := MakePlan(Desired{Revision: testRev, Apps: []spec.App{tt.desired}}, Observed{Instances: observed}, Policy{})
			got := stepLines(p) // stepLine writes every reason as "field: old → new"
			if len(got) != len(tt.want) {
				t.Fatalf("steps = %q, want %q", got, tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("step %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
			text := p.Text()
			j, _ := json.Marshal(p)
			for _, mac := range []string{oldMAC, newMAC} {
				for _, tag := range []string{mac, mac[:16], tt.desired.Spec.Container.SecretTags()[target]} {
					if tag != "" && (strings.Contains(text, tag) || strings.Contains(string(j), tag)) {
						t.Errorf("the plan shows a secret's MAC or tag %s:\n%s\n%s", tag, text, j)
					}
				}
			}
			if tt.name == "value changed" && !strings.Contains(text, "(container.secretFiles[/run/secrets/db_password]: changed)") {
				t.Errorf("plan text does not read \"secretFiles[...]: changed\":\n%s", text)
			}
		})
	}
}
