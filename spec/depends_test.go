package spec

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// depApp is an app document with replicas and the dependsOn lines given.
func depApp(name string, replicas int, deps ...string) string {
	s := fmt.Sprintf("apiVersion: berth/v1\nkind: App\nmetadata: {name: %s}\nspec:\n  replicas: %d\n  system: {image: ubuntu/24.04}\n", name, replicas)
	if len(deps) > 0 {
		s += "  dependsOn:\n"
		for _, d := range deps {
			s += "  - " + d + "\n"
		}
	}
	return s
}

func loadDocs(t *testing.T, docs ...string) *Result {
	t.Helper()
	r, err := LoadBytes("apps.yaml", []byte(strings.Join(docs, "---\n")), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDependsOnDecode(t *testing.T) {
	r := loadDocs(t, depApp("db", 3), depApp("web", 1, "{app: db}", "{app: cache, minReady: all, timeout: 30s}"), depApp("cache", 2),
		depApp("api", 1, "{app: db, minReady: 2}"))
	if len(r.Diagnostics) > 0 {
		t.Fatalf("diagnostics: %v", r.Diagnostics)
	}
	var web, api App
	for _, a := range r.Apps {
		switch a.Metadata.Name {
		case "web":
			web = a
		case "api":
			api = a
		}
	}
	want := []Dependency{{App: "db", MinReady: 1, Timeout: DefaultDependencyTimeout}, {App: "cache", MinReady: MinReadyAll, Timeout: Duration(30 * time.Second)}}
	if fmt.Sprint(web.Spec.DependsOn) != fmt.Sprint(want) {
		t.Errorf("web dependsOn = %v, want %v", web.Spec.DependsOn, want)
	}
	if api.Spec.DependsOn[0].MinReady.Of(3) != 2 || web.Spec.DependsOn[1].MinReady.Of(2) != 2 {
		t.Errorf("minReady: api %v, web %v", api.Spec.DependsOn[0].MinReady, web.Spec.DependsOn[1].MinReady)
	}
}

func TestDependsOnProblems(t *testing.T) {
	tests := []struct {
		name    string
		docs    []string
		want    []string
		invalid []string // held apps
	}{
		{"unknown app", []string{depApp("web", 1, "{app: dbx}")},
			[]string{`apps.yaml:8:11: spec.dependsOn[0].app: unknown app "dbx": no app of that name in the spec tree`}, []string{"web"}},
		{"itself", []string{depApp("web", 1, "{app: web}")},
			[]string{`apps.yaml:8:11: spec.dependsOn[0].app: an app cannot depend on itself`}, []string{"web"}},
		{"listed twice", []string{depApp("db", 1), depApp("web", 1, "{app: db}", "{app: db}")},
			[]string{`apps.yaml:16:11: spec.dependsOn[1].app: app "db" is already listed in dependsOn[0]`}, []string{"web"}},
		{"minReady word", []string{depApp("db", 1), depApp("web", 1, "{app: db, minReady: most}")},
			[]string{`apps.yaml:15:25: spec.dependsOn[0].minReady: must be a number of replicas from 1 to 1000 or "all", got "most"`}, []string{"web"}},
		{"minReady zero", []string{depApp("db", 1), depApp("web", 1, "{app: db, minReady: 0}")},
			[]string{`apps.yaml:15:25: spec.dependsOn[0].minReady: must be between 1 and 1000, got 0`}, []string{"web"}},
		{"minReady above replicas", []string{depApp("db", 2), depApp("web", 1, "{app: db, minReady: 3}")},
			[]string{`apps.yaml:15:11: spec.dependsOn[0].app: minReady is 3 but app "db" has 2 replicas`}, []string{"web"}},
		{"timeout zero", []string{depApp("db", 1), depApp("web", 1, "{app: db, timeout: 0s}")},
			[]string{`apps.yaml:15:24: spec.dependsOn[0].timeout: duration must be more than 0, got "0s"`}, []string{"web"}},
		{"app missing", []string{depApp("db", 1), depApp("web", 1, "{minReady: 1}")},
			[]string{`apps.yaml:15:5: spec.dependsOn[0].app: required field is missing`}, []string{"web"}},
		{"two-app cycle, a third outside loads", []string{depApp("db", 1, "{app: web}"), depApp("web", 1, "{app: db}"), depApp("cache", 1, "{app: db}")},
			[]string{
				`apps.yaml:8:11: spec.dependsOn[0].app: dependency cycle: db → web → db`,
				`apps.yaml:17:11: spec.dependsOn[0].app: dependency cycle: web → db → web`,
			}, []string{"db", "web"}},
		{"three-app cycle", []string{depApp("a", 1, "{app: b}"), depApp("b", 1, "{app: c}"), depApp("c", 1, "{app: a}", "{app: d}"), depApp("d", 1)},
			[]string{
				`apps.yaml:8:11: spec.dependsOn[0].app: dependency cycle: a → b → c → a`,
				`apps.yaml:17:11: spec.dependsOn[0].app: dependency cycle: b → c → a → b`,
				`apps.yaml:26:11: spec.dependsOn[0].app: dependency cycle: c → a → b → c`,
			}, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := loadDocs(t, tt.docs...)
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
			if fmt.Sprint(r.InvalidApps) != fmt.Sprint(tt.invalid) {
				t.Errorf("invalid apps %v, want %v", r.InvalidApps, tt.invalid)
			}
		})
	}
}

// A diamond is no cycle, and a chain of 200 apps loads, each checked once.
func TestDependsOnDiamondAndLongChain(t *testing.T) {
	r := loadDocs(t, depApp("db", 1), depApp("left", 1, "{app: db}"), depApp("right", 1, "{app: db}"), depApp("top", 1, "{app: left}", "{app: right}"))
	if len(r.Diagnostics) > 0 || len(r.Apps) != 4 {
		t.Fatalf("diamond: %v", r.Diagnostics)
	}
	var docs []string
	for i := range 200 {
		if i == 0 {
			docs = append(docs, depApp("a0", 1))
			continue
		}
		docs = append(docs, depApp(fmt.Sprintf("a%d", i), 1, fmt.Sprintf("{app: a%d}", i-1)))
	}
	r = loadDocs(t, docs...)
	if len(r.Diagnostics) > 0 || len(r.Apps) != 200 {
		t.Fatalf("chain: %d apps, %v", len(r.Apps), r.Diagnostics)
	}
	// Closing the chain makes all 200 one cycle; the path is printed whole.
	docs[0] = depApp("a0", 1, "{app: a199}")
	r = loadDocs(t, docs...)
	if len(r.Apps) != 0 || len(r.InvalidApps) != 200 || len(r.Diagnostics) != 200 {
		t.Fatalf("closed chain: %d apps, %d invalid, %d diagnostics", len(r.Apps), len(r.InvalidApps), len(r.Diagnostics))
	}
	if msg := r.Diagnostics[0].Message; !strings.HasPrefix(msg, "dependency cycle: a0 → a199 → a198") || strings.Count(msg, "→") != 200 {
		t.Errorf("cycle message %q", msg[:80])
	}
}
