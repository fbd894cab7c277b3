package readme

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/berth-gitops/berth/"

// testOnly are packages that no berth binary links: test helpers and the
// test environment's image builder. The map leaves them out.
var testOnly = []string{"internal/testlxd", "internal/readme", "reconciler/plan/plantest", "testenv/appimages"}

// TestReadmePackageMap: every package of the module is in the README's
// package table, with exactly the berth packages it imports, and the table
// names no package that does not exist.
func TestReadmePackageMap(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string][]string{}
	row := regexp.MustCompile("^\\| `([a-z/]+)` \\|.*\\| ([^|]+) \\|$")
	name := regexp.MustCompile("`([a-z/]+)`")
	for _, line := range strings.Split(string(readme), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		imports := []string{}
		for _, n := range name.FindAllStringSubmatch(m[2], -1) {
			imports = append(imports, n[1])
		}
		table[m[1]] = imports
	}
	out, err := exec.Command("go", "list", "-json", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkg := strings.TrimPrefix(p.ImportPath, module)
		if slices.Contains(testOnly, pkg) {
			continue
		}
		seen[pkg] = true
		var own []string
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, module) {
				own = append(own, strings.TrimPrefix(imp, module))
			}
		}
		slices.Sort(own)
		got, ok := table[pkg]
		if !ok {
			t.Errorf("README's package map lacks %s (imports %v)", pkg, own)
			continue
		}
		slices.Sort(got)
		if !slices.Equal(got, own) && !(len(got) == 0 && len(own) == 0) {
			t.Errorf("README says %s imports %v; it imports %v", pkg, got, own)
		}
	}
	for pkg := range table {
		if !seen[pkg] {
			t.Errorf("README's package map names %s, which is no package", pkg)
		}
	}
}
