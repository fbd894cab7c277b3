package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// writeTemp writes content to a new file in a temporary directory.
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Replicas that no cluster member can take are blocked, not "No
// changes.": exit 3 with the reason, in text and JSON (issue 18 #5).
func TestPlanUnplaceableExits3(t *testing.T) {
	r := newRepo(t)
	r.write("apps/api.yaml", appYAML("api", 1, "reg/api:1"))
	r.write("apps/web.yaml", strings.Replace(appYAML("web", 2, "reg/web:1"), "  container:", "    placement: {members: [m9]}\n  container:", 1))
	r.commit("web on m9, a typo")
	online := writeTemp(t, "online.json", `{"instances":[],"members":[{"name":"m1","status":"Online"},{"name":"m2","status":"Online"}]}`)
	offline := writeTemp(t, "offline.json", `{"instances":[],"members":[{"name":"m1","status":"Offline"},{"name":"m2","status":"Offline"}]}`)

	code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", online)
	want := "Blocked: the live state cannot converge to this revision: 2 replicas cannot be placed (web-0, web-1: placement.members: m9 is not a cluster member)."
	if code != exitBlocked || !strings.Contains(out, "Plan: 1 to create.") || !strings.Contains(out, want) ||
		!strings.Contains(out, "! web-0 (create): placement.members: m9 is not a cluster member") {
		t.Errorf("members [m9]: code %d, want %d\n%s%s", code, exitBlocked, out, errOut)
	}
	code, out, _ = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", online, "-o", "json")
	var pl struct {
		Unplaceable []struct{ Instance, Action, Why string }
	}
	if err := json.Unmarshal([]byte(out), &pl); err != nil || code != exitBlocked || len(pl.Unplaceable) != 2 ||
		pl.Unplaceable[1].Instance != "web-1" || pl.Unplaceable[1].Action != "create" || !strings.Contains(pl.Unplaceable[1].Why, "m9 is not a cluster member") {
		t.Errorf("-o json: code %d, %v, %+v\n%s", code, err, pl, out)
	}

	code, out, errOut = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", offline)
	if code != exitBlocked || strings.Contains(out, "No changes.") || !strings.Contains(out, "Nothing to do now: 3 cannot be placed.") ||
		!strings.Contains(out, "api-0: allowed members not online: m1 offline, m2 offline") {
		t.Errorf("every member offline: code %d, want %d\n%s%s", code, exitBlocked, out, errOut)
	}
}

// Every app scaled to zero deletes the fleet as removing the apps does:
// the mass-prune guard holds (exit 3) until --allow-mass-prune (issue 18).
func TestPlanScaleToZeroIsGuarded(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	r.write("apps/api.yaml", appYAML("api", 1, "reg/api:1"))
	sha := r.commit("web, api")
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	b, _ := json.Marshal(normalizeObserved(converged(res.Apps, sha)))
	obs := writeTemp(t, "observed.json", string(b))
	r.write("apps/web.yaml", appYAML("web", 0, "reg/web:1"))
	r.write("apps/api.yaml", appYAML("api", 0, "reg/api:1"))
	r.commit("all to zero")

	code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", obs)
	if code != exitBlocked || strings.Contains(out, "Plan:") ||
		!strings.Contains(out, "Pruning skipped: pruning and scaling down would delete 3 of 3 owned instances (3 by scaling down), more than the 50% allowed") {
		t.Errorf("scale to zero: code %d, want %d\n%s%s", code, exitBlocked, out, errOut)
	}
	code, out, errOut = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", obs, "--allow-mass-prune")
	if code != exitChanges || !strings.Contains(out, "Plan: 3 to delete.") {
		t.Errorf("scale to zero, --allow-mass-prune: code %d, want %d\n%s%s", code, exitChanges, out, errOut)
	}
	// One app of two to zero: 1 of 3 is within the share.
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	r.commit("web back")
	if code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", obs); code != exitChanges || !strings.Contains(out, "Plan: 1 to delete.") {
		t.Errorf("api to zero: code %d, want %d\n%s%s", code, exitChanges, out, errOut)
	}
}

// An instance of berth's with hand-edited keys stays a conflict (exit 3)
// after a scale-down takes its slot out of the app's range (issue 18).
func TestPlanGarbledReplicaAfterScaleDownExits3(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:1"))
	sha := r.commit("web: 2")
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	obs := converged(res.Apps, sha)
	obs.Instances[1].Config[ownership.KeySlot] = "5"
	b, _ := json.Marshal(normalizeObserved(obs))
	p := writeTemp(t, "observed.json", string(b))
	for _, replicas := range []int{2, 1} {
		if replicas != 2 {
			r.write("apps/web.yaml", appYAML("web", replicas, "reg/web:1"))
			r.commit("web: scaled down")
		}
		code, out, errOut := berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", p)
		if code != exitBlocked || strings.Contains(out, "No changes.") ||
			!strings.Contains(out, `! web-1 (wanted by web): instance is owned by berth but its keys say app "web" slot "5"`) ||
			!strings.Contains(out, "Blocked: the live state cannot converge to this revision: 1 replica blocked by a conflict (web-1).") {
			t.Errorf("replicas %d: code %d, want %d\n%s%s", replicas, code, exitBlocked, out, errOut)
		}
	}
}

// --repo naming a path that does not exist is an error naming it, never
// the repository around it (issue 18).
func TestPlanMissingRepoPath(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 1, "reg/web:1"))
	r.commit("web")
	obs := writeTemp(t, "observed.json", `{"instances":[]}`)
	missing := filepath.Join(r.dir, "typo", "deeper")
	code, out, errOut := berth(t, "plan", "--repo", missing, "--dir", "apps", "--observed", obs)
	if code != exitError || out != "" || errOut != "berth: "+missing+" is not a Git repository: the path does not exist\n" {
		t.Errorf("exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := berth(t, "plan", "--repo", filepath.Join(r.dir, "apps"), "--dir", "apps", "--observed", obs); code != exitChanges {
		t.Errorf("a folder inside the repository: exit %d\n%s", code, errOut)
	}
}
