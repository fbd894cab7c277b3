package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/renderer/html"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/source"
	"github.com/berth-gitops/berth/spec"
)

var update = flag.Bool("update", false, "rewrite the golden files of cmd/berth/testdata")

const goldenSHA = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// TestPlanMarkdownGolden renders the planner's golden cases
// (testdata/plan/<case>) as a pull request comment.
func TestPlanMarkdownGolden(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "plan", "*"))
	if len(dirs) == 0 {
		t.Fatal("no golden cases")
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			res, err := spec.LoadDir(t.Context(), filepath.Join(dir, "desired"), spec.Options{})
			if err != nil {
				t.Fatal(err)
			}
			obs, err := readObserved(filepath.Join(dir, "observed.json"))
			if err != nil {
				t.Fatal(err)
			}
			policy := plan.Policy{Owner: "berth", MaxPruneFraction: 0.5}
			if b, err := os.ReadFile(filepath.Join(dir, "policy.json")); err == nil {
				if err := json.Unmarshal(b, &policy); err != nil {
					t.Fatal(err)
				}
			}
			md := planMarkdown(plan.MakePlan(plan.NewDesired(goldenSHA, res), obs, policy))
			compareGolden(t, filepath.Join("testdata", "markdown", "plan-"+filepath.Base(dir)+".md"), []byte(md))
			checkMarkdown(t, md, nil)
		})
	}
}

// loadApps loads spec files given as name -> YAML.
func loadApps(t *testing.T, files map[string]string) []spec.App {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := spec.LoadDir(t.Context(), dir, spec.Options{})
	if err != nil || len(res.Diagnostics) > 0 {
		t.Fatal(err, res.Diagnostics)
	}
	return res.Apps
}

var (
	fromCommit = source.Commit{SHA: "1111111111111111111111111111111111111111", Subject: "base", When: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	toCommit   = source.Commit{SHA: "2222222222222222222222222222222222222222", Subject: "web: hello:2, 5 replicas; drop worker", When: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
)

// TestDiffMarkdownGolden: a pull request that scales and re-images one
// app, changes its system image (a recreate) and removes another (a
// prune the guard would refuse).
func TestDiffMarkdownGolden(t *testing.T) {
	base := appYAML("web", 3, "127.0.0.1:5000/berth/hello:1")
	old := loadApps(t, map[string]string{
		"web.yaml":    base,
		"worker.yaml": appYAML("worker", 4, "127.0.0.1:5000/berth/worker:1"),
		"api.yaml":    appYAML("api", 1, "127.0.0.1:5000/berth/api:1"),
	})
	changed := strings.NewReplacer("replicas: 3", "replicas: 5", "hello:1", "hello:2", "image: berth/debian-docker", "image: berth/debian-docker-13",
		"limits: {memory: 512MiB}", "limits: {memory: 1GiB}").Replace(base)
	new := loadApps(t, map[string]string{"web.yaml": changed, "api.yaml": appYAML("api", 1, "127.0.0.1:5000/berth/api:1")})
	d := diffSpecs(fromCommit, toCommit, old, new)
	md := d.markdown(8, 2)
	compareGolden(t, filepath.Join("testdata", "markdown", "diff.md"), []byte(md))
	checkMarkdown(t, md, nil)
	// worker's 4 replicas are half of the 8: the guard lets that prune
	// go; with 7 they would be more than half.
	if strings.Contains(md, "Mass prune") {
		t.Errorf("pruning 4 of 8 replicas warns of a mass prune:\n%s", md)
	}
	if md := d.markdown(7, 2); !strings.Contains(md, "Mass prune: removing apps and scaling down deletes 4 of the 7 replicas") {
		t.Errorf("pruning 4 of 7 replicas does not warn:\n%s", md)
	}
	// Scaling down counts as the planner's guard counts it: api 4 → 1
	// deletes 3 of 5.
	scaled := diffSpecs(fromCommit, toCommit,
		loadApps(t, map[string]string{"api.yaml": appYAML("api", 4, "127.0.0.1:5000/berth/api:1"), "db.yaml": appYAML("db", 1, "127.0.0.1:5000/berth/api:1")}),
		loadApps(t, map[string]string{"api.yaml": appYAML("api", 1, "127.0.0.1:5000/berth/api:1"), "db.yaml": appYAML("db", 1, "127.0.0.1:5000/berth/api:1")}))
	if md := scaled.markdown(5, 2); !strings.Contains(md, "deletes 3 of the 5 replicas") {
		t.Errorf("scaling 4 → 1 of 5 replicas does not warn:\n%s", md)
	}
	if md := diffSpecs(fromCommit, toCommit, old, nil).markdown(8, 0); !strings.Contains(md, "Mass prune: this revision has no apps at all") {
		t.Errorf("a revision without apps does not warn:\n%s", md)
	}
}

// sysApp is a system-only app (no container) with extra system lines.
func sysApp(name, extra string) string {
	return "apiVersion: berth/v1\nkind: App\nmetadata:\n  name: " + name + "\nspec:\n  replicas: 2\n  system:\n    image: berth/busybox\n" + extra
}

// TestDiffMarkdownRecreatesGolden: an app that gains its container and
// one that loses it recreate every replica (the planner does); a
// placement change moves replicas (a recreate); a provision change is
// re-run in place, not a recreate.
func TestDiffMarkdownRecreatesGolden(t *testing.T) {
	withContainer := func(name string) string {
		return sysApp(name, "") + "  container:\n    image: 127.0.0.1:5000/berth/hello:1\n"
	}
	old := loadApps(t, map[string]string{
		"gains.yaml":  sysApp("gains", ""),
		"loses.yaml":  withContainer("loses"),
		"moves.yaml":  sysApp("moves", "    placement: {members: [m1, m2]}\n"),
		"reprov.yaml": sysApp("reprov", "    provision: {run: [echo one]}\n"),
	})
	new := loadApps(t, map[string]string{
		"gains.yaml":  withContainer("gains"),
		"loses.yaml":  sysApp("loses", ""),
		"moves.yaml":  sysApp("moves", "    placement: {members: [m2, m3]}\n"),
		"reprov.yaml": sysApp("reprov", "    provision: {run: [echo two]}\n"),
	})
	md := diffSpecs(fromCommit, toCommit, old, new).markdown(8, 4)
	compareGolden(t, filepath.Join("testdata", "markdown", "diff-recreates.md"), []byte(md))
	checkMarkdown(t, md, nil)
	recreated, _, _ := strings.Cut(md[strings.Index(md, "**Recreated"):], "\n\n**")
	for _, app := range []string{"gains", "loses", "moves"} {
		if !strings.Contains(recreated, "`"+app+"`") {
			t.Errorf("%s is not listed as recreated:\n%s", app, md)
		}
	}
	if strings.Contains(recreated, "`reprov`") || !strings.Contains(md, "**Re-provisioned in place**") {
		t.Errorf("a provision change is a recreate, or not said:\n%s", md)
	}
}

// hostileMD tries everything a Markdown value can do: close a code span,
// split a table row, raw HTML, a javascript: link, an image, a mention,
// emphasis, a heading and a list item on a forged line, an HTML entity,
// a terminal escape and a bidi override.
const hostileMD = "`` x | y ` <script>alert(1)</script><img src=x onerror=alert(1)> [click](javascript:alert(1)) ![i](https://evil.example/i.png) @everyone **PWN** &lt;b&gt; \x1b[2J\u202eevil\n# FORGED heading\n- FORGED item\n</details><details open>FORGED"

// A hostile spec value renders as text: it stays inside code spans, the
// tables keep their shape, and no link, image, heading or HTML comes out.
func TestMarkdownEscapesHostileValues(t *testing.T) {
	// diff: the value in env and config, and in the commit subject.
	old := loadApps(t, map[string]string{"web.yaml": specWithNote("web", "fine")})
	new := loadApps(t, map[string]string{"web.yaml": specWithNote("web", hostileMD)})
	to := toCommit
	to.Subject = hostileMD
	d := diffSpecs(fromCommit, to, old, new)
	checkMarkdown(t, d.markdown(1, 1), []string{"FORGED", "alert", "evil", "everyone", "PWN"})
	single := loadApps(t, map[string]string{"web.yaml": specWithNote("web", strings.ReplaceAll(hostileMD, "\n", " "))})
	checkMarkdown(t, diffSpecs(fromCommit, to, old, single).markdown(1, 1), []string{"FORGED", "alert", "evil", "everyone", "PWN"})

	// plan: hostile live values (an image key, another owner, a Docker
	// error) and spec values.
	res := &spec.Result{Apps: loadApps(t, map[string]string{"web.yaml": strings.Replace(specWithNote("web", "fine"), "replicas: 1", "replicas: 3", 1)})}
	obs := converged(res.Apps, goldenSHA)
	obs.Instances[0].Config["user.note"] = hostileMD
	obs.Instances[0].Config[ownership.KeyImage] = strings.ReplaceAll(hostileMD, "\n", " ")
	obs.Instances[0].Config[ownership.KeySystemHash] = "stale"
	obs.Instances[1].Config[ownership.KeyOwner] = hostileMD
	obs.Instances[2].DockerError = hostileMD
	pl := plan.MakePlan(plan.NewDesired(goldenSHA, res), obs, plan.Policy{Owner: "berth", MaxPruneFraction: 0.5})
	md := planMarkdown(pl)
	if !strings.Contains(md, "Image changes") || !strings.Contains(md, "Conflict") {
		t.Errorf("the hostile plan lacks its image change or conflict:\n%s", md)
	}
	checkMarkdown(t, md, []string{"FORGED", "alert", "evil", "everyone", "PWN"})
}

var (
	codeOrPre = regexp.MustCompile(`(?s)<code>.*?</code>|<pre>.*?</pre>`)
	tableRe   = regexp.MustCompile(`(?s)<table>.*?</table>`)
	rowRe     = regexp.MustCompile(`(?s)<tr>.*?</tr>`)
	cellRe    = regexp.MustCompile(`<t[hd][ >]`)
)

// checkMarkdown renders md as GitHub does (CommonMark with GFM tables and
// autolinks) and checks that markers of hostile values appear only in
// code, that every table row has as many cells as its header, and that
// the only links, HTML and headings are berth's own.
func checkMarkdown(t *testing.T, md string, markers []string) {
	t.Helper()
	if needsEscape(strings.NewReplacer("\n", "", "\t", "").Replace(md)) {
		t.Errorf("raw control or bidi characters in the Markdown:\n%q", md)
	}
	var out bytes.Buffer
	// Unsafe: raw HTML goes through as it is, so HTML a value injected
	// would show (GitHub filters it; berth must not rely on that).
	gm := goldmark.New(goldmark.WithExtensions(extension.GFM), goldmark.WithRendererOptions(html.WithUnsafe()))
	if err := gm.Convert([]byte(md), &out); err != nil {
		t.Fatal(err)
	}
	rendered := out.String()
	outside := codeOrPre.ReplaceAllString(rendered, "")
	for _, m := range markers {
		if strings.Contains(outside, m) {
			t.Errorf("%q shows outside code:\n%s\n--- markdown\n%s", m, outside, md)
		}
	}
	for _, bad := range []string{"<a ", "<img", "<script", "<h1", "<h2", "<em>", "</details><details"} {
		if strings.Contains(outside, bad) {
			t.Errorf("rendered HTML has %s outside code:\n%s", bad, outside)
		}
	}
	if strings.Count(outside, "<details") != 1 || strings.Count(outside, "</details>") != 1 {
		t.Errorf("more than berth's one <details>:\n%s", md)
	}
	for _, table := range tableRe.FindAllString(rendered, -1) {
		rows := rowRe.FindAllString(table, -1)
		for _, r := range rows[1:] {
			if got, want := len(cellRe.FindAllString(r, -1)), len(cellRe.FindAllString(rows[0], -1)); got != want {
				t.Errorf("a table row has %d cells, its header %d:\n%s", got, want, r)
			}
		}
	}
}

// The commands speak Markdown with -o markdown, with the exit codes of
// their other formats.
func TestMarkdownOutputOfTheCommands(t *testing.T) {
	r := newRepo(t)
	r.write("apps/web.yaml", appYAML("web", 1, "reg/web:1"))
	r.commit("web")
	r.write("apps/web.yaml", appYAML("web", 2, "reg/web:2"))
	sha := r.commit("web: 2 replicas, reg/web:2")
	code, out, errOut := berth(t, "diff", "--repo", r.dir, "-o", "markdown", "HEAD~1", "HEAD")
	if code != exitChanges || !strings.Contains(out, "### berth diff") || !strings.Contains(out, "- `web` container image: `reg/web:1` → `reg/web:2`") {
		t.Errorf("diff -o markdown: exit %d\n%s%s", code, out, errOut)
	}
	res, err := spec.LoadDir(t.Context(), filepath.Join(r.dir, "apps"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	obs := converged(res.Apps, sha)
	obs.Instances = obs.Instances[:1]
	p := filepath.Join(t.TempDir(), "observed.json")
	b, _ := json.Marshal(normalizeObserved(obs))
	os.WriteFile(p, b, 0o644)
	code, out, errOut = berth(t, "plan", "--repo", r.dir, "--dir", "apps", "--observed", p, "-o", "markdown")
	if code != exitChanges || !strings.Contains(out, "**Plan: 1 to create.**") || !strings.Contains(out, "| `web` | +1 |") {
		t.Errorf("plan -o markdown: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut := berth(t, "plan", "--repo", r.dir, "-o", "html"); code != exitError || !strings.Contains(errOut, "want text, json or markdown") {
		t.Errorf("plan -o html: exit %d %s", code, errOut)
	}
}

// A plan's markdown names replicas that cannot be placed and replicas
// whose Docker was not observed, with why: both keep the plan blocked.
func TestPlanWarningsNameUnplaceableAndUnobserved(t *testing.T) {
	pl := plan.Plan{
		Unplaceable: []plan.Unplaceable{{App: "web", Instance: "web-3", Action: plan.Create, Why: "placement.members: m9 is not a cluster member"}},
		Unobserved:  []plan.Unready{{App: "web", Instance: "web-1", Why: "docker state unknown (LXD did not run the tunnel): i/o timeout"}},
	}
	got := strings.Join(planWarnings(pl), "\n")
	for _, want := range []string{"Cannot be placed: `web-3` (create): `placement.members: m9 is not a cluster member`", "Not observed, waiting for another look: `web-1`"} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings lack %q:\n%s", want, got)
		}
	}
}
