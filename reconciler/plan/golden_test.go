package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/plan")

// goldenRevision is the Git SHA every golden case plans for.
const goldenRevision = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

// TestGolden plans each testdata/plan/<case>: desired/ is a spec tree,
// observed.json the live state, policy.json (optional) the policy.
// plan.golden holds Text() and plan.json.golden the indented JSON.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("..", "..", "testdata", "plan", "*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatal("no golden cases found")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			res, err := spec.LoadDir(t.Context(), filepath.Join(dir, "desired"), spec.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var observed Observed
			readJSON(t, filepath.Join(dir, "observed.json"), &observed, true)
			var policy Policy
			readJSON(t, filepath.Join(dir, "policy.json"), &policy, false)

			p := MakePlan(NewDesired(goldenRevision, res), observed, policy)
			js, err := json.MarshalIndent(p, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, filepath.Join(dir, "plan.golden"), []byte(p.Text()))
			compareGolden(t, filepath.Join(dir, "plan.json.golden"), append(js, '\n'))

			var back Plan
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatalf("plan JSON does not read back: %v", err)
			}
			if back.Text() != p.Text() {
				t.Error("plan read back from JSON renders differently")
			}
		})
	}
}

func readJSON(t *testing.T, path string, v any, required bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) && !required {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./reconciler/plan/ -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test ./reconciler/plan/ -update and review the diff):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
