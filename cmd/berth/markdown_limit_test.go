package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// manyApps is n apps of the given replicas, in files of up to 1000
// documents (spec.MaxDocuments), as map name -> YAML for loadApps.
func manyApps(n, replicas int) map[string]string {
	files := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("f%d.yaml", i/1000)
		files[name] += "---\n" + appYAML(fmt.Sprintf("app-%04d", i), replicas, fmt.Sprintf("reg/app-%04d:1", i))
	}
	return files
}

// The pull request comment stays under GitHub's 65536 characters whatever
// the change, every section cut on its own and saying what it left out
// (issue 18 item 3): one changed 200 KB value, six apps scaled to 1000,
// 3,000 apps added. Both diff and plan.
func TestMarkdownStaysUnderGitHubsLimit(t *testing.T) {
	big := func(c string) string { return strings.Repeat("v", 200<<10) + c }
	withNote := func(note string) []spec.App {
		return loadApps(t, map[string]string{"web.yaml": strings.Replace(specWithNote("web", note), "replicas: 1", "replicas: 3", 1)})
	}
	many := loadApps(t, manyApps(3000, 1))
	for _, tt := range []struct {
		name     string
		old, new []spec.App
		cut      string // the announcement of the cut expected in the diff
		planCut  string // and in the plan
	}{
		// The diff shows where the values differ, cut.
		{"one changed 200 KB value", withNote(big("1")), withNote(big("2")), "`…vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv1` → `…vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv2`",
			"more bytes not shown"},
		{"six apps scaled to 1000", loadApps(t, manyApps(6, 1)), loadApps(t, manyApps(6, spec.MaxReplicas)), "more bytes not shown", "more lines not shown"},
		{"3,000 apps added", nil, many, "more apps not shown", "more apps not shown"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := diffSpecs(fromCommit, toCommit, tt.old, tt.new)
			md := d.markdown(len(tt.old), len(tt.new))
			checkSize(t, "diff", md, tt.cut)

			obs := converged(tt.old, goldenSHA)
			pl := plan.MakePlan(plan.NewDesired(toCommit.SHA, &spec.Result{Apps: tt.new}), obs, plan.Policy{Owner: "berth", MaxPruneFraction: 0.5})
			if len(pl.Steps) == 0 {
				t.Fatal("no steps planned")
			}
			checkSize(t, "plan", planMarkdown(pl), tt.planCut)
		})
	}
	// A value berth shows whole elsewhere, a commit subject, is cut too.
	to := toCommit
	to.Subject = strings.Repeat("s", 200<<10)
	checkSize(t, "diff with a 200 KB subject", diffSpecs(fromCommit, to, nil, withNote("x")).markdown(0, 1), "`"+strings.Repeat("s", mdSpanMax)+"…`")

	// Every section has its share: 3,000 apps removed fill the table and
	// the warnings, each cut on its own.
	md := diffSpecs(fromCommit, toCommit, many, nil).markdown(3000, 0)
	checkSize(t, "diff removing 3,000 apps", md, "more apps not shown")
	if !strings.Contains(md, "more warnings not shown") || !strings.Contains(md, "Mass prune") {
		t.Errorf("the warnings are not cut on their own, or the mass prune is lost:\n%s", md)
	}
}

// checkSize checks that md fits in a comment, says what it cut and
// still renders as berth's own Markdown.
func checkSize(t *testing.T, what, md, cut string) {
	t.Helper()
	if len(md) >= 65536 {
		t.Errorf("%s: %d bytes, over GitHub's 65536", what, len(md))
	}
	if !strings.Contains(md, cut) {
		t.Errorf("%s: the cut is not said (%q):\n%s", what, cut, head(md))
	}
	checkMarkdown(t, md, nil)
}

func head(s string) string {
	if len(s) > 4000 {
		return s[:4000] + "\n[…]"
	}
	return s
}
