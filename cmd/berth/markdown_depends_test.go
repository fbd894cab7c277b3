package main

import (
	"strings"
	"testing"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// The comment shows the order of dependent apps and what each waits for.
func TestPlanMarkdownDependencyOrder(t *testing.T) {
	pl := plan.Plan{Revision: "1111111111111111111111111111111111111111", Steps: []plan.Step{},
		Order:   []string{"db", "web"},
		Blocked: []plan.Blocked{{App: "web", Why: "blocked by db: 0/1 ready (db-0: not created)", Steps: 2, On: []string{"db"}}}}
	md := planMarkdown(pl)
	for _, want := range []string{
		"**Order** (each app after the apps it depends on; removals in reverse): `db` → `web`\n",
		"- ⚠️ Blocked: `web` (2 steps): `blocked by db: 0/1 ready (db-0: not created)`\n",
		"Nothing to do now: 1 app(s) blocked by dependencies.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
