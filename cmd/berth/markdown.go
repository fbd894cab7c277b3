package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// Markdown output (-o markdown) is a compact summary for a pull request
// comment, on GitHub and GitLab alike. Spec values are untrusted: a value
// could close a code span, split a table row, open a link or raw HTML,
// mention people or forge lines. So every value berth did not write
// itself is put in a code span (where Markdown, HTML and @mentions are
// inert) after safeText, with a fence longer than any run of backticks in
// it, and pipes escaped inside table cells. The full text rendering goes
// in a fenced block, fenced the same way.

// maxMarkdown keeps a comment under GitHub's limit of 65536 characters
// (GitLab's is larger), counted in bytes, which are never fewer. Every
// section has its share of it and is cut on its own, saying what it left
// out: a huge one (3,000 apps added) leaves room for the others. The
// folded full text gets what the sections left. No single line can
// outgrow its section: values are cut (mdWidth) and lists of names
// counted past mdListMax.
const (
	maxMarkdown = 60000

	mdShareTable       = 16000
	mdShareImages      = 8000
	mdShareRecreated   = 6000
	mdShareReprovision = 4000
	mdShareOthers      = 10000
	mdShareWarnings    = 8000

	mdListMax = 10
	mdSpanMax = 500
	mdLineMax = 2000 // of the full text
)

// checkOutputMarkdown validates -o for the commands that also speak
// Markdown.
func checkOutputMarkdown(o string) error {
	if o == "markdown" {
		return nil
	}
	if err := checkOutput(o); err != nil {
		return fmt.Errorf("unknown output format %q (want text, json or markdown)", o)
	}
	return nil
}

// mdCode is s as an inline code span: escaped for one line (control and
// bidi characters, newlines), cut past mdSpanMax bytes (room for a
// planner's message), delimited by more backticks than it holds.
func mdCode(s string) string {
	if s == "" {
		return "(unset)" // plain: the comment has no emphasis a value could fake
	}
	return mdSpan(cutValue(s, 0, mdSpanMax))
}

// mdSpan is mdCode of text already cut (escaped or not: escaping escaped
// text keeps it).
func mdSpan(s string) string {
	s = safeText(s)
	delim := strings.Repeat("`", longestRun(s, '`')+1)
	if strings.HasPrefix(s, "`") || strings.HasSuffix(s, "`") || strings.HasPrefix(s, " ") || strings.HasSuffix(s, " ") {
		s = " " + s + " " // one space each side is stripped when rendered
	}
	return delim + s + delim
}

// mdCell makes a table cell of Markdown: a pipe would end the cell, even
// inside a code span, unless escaped (GFM takes \| there as |).
func mdCell(s string) string {
	return strings.ReplaceAll(s, "|", `\|`)
}

// mdFence is text as a fenced code block, whose fence is longer than any
// run of backticks in it.
func mdFence(text string) string {
	fence := strings.Repeat("`", max(3, longestRun(text, '`')+1))
	return fence + "text\n" + strings.TrimRight(text, "\n") + "\n" + fence + "\n"
}

func longestRun(s string, c byte) int {
	most, n := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			n++
			most = max(most, n)
		} else {
			n = 0
		}
	}
	return most
}

// mdCodes is a list of code spans, the first mdListMax of them:
// `a`, `b`, … 990 more.
func mdCodes(items []string) string {
	return mdJoin(items, "", ", ")
}

// mdJoin is items as code spans, each after sign, joined by sep; past
// mdListMax it says how many more there are.
func mdJoin(items []string, sign, sep string) string {
	out := make([]string, 0, min(len(items), mdListMax)+1)
	for i, s := range items {
		if i == mdListMax {
			out = append(out, "… "+count(len(items)-i)+" more")
			break
		}
		out = append(out, sign+mdCode(s))
	}
	return strings.Join(out, sep)
}

// mdList writes lines while they fit in budget bytes, then one that says
// how many were left out. The blank line before it ends a table.
func mdList(b *strings.Builder, lines []string, budget int, noun string) {
	for i, l := range lines {
		if budget -= len(l) + 1; budget < 0 {
			fmt.Fprintf(b, "\n… %s more %s not shown (run the command for all of them)\n", count(len(lines)-i), noun)
			return
		}
		b.WriteString(l + "\n")
	}
}

// count writes n with thousands separators: 2,950.
func count(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// mdDetails closes a summary with the full text rendering, folded, cut at
// a line so that the whole comment stays under maxMarkdown (the fences
// counted), saying how many lines it left out.
func mdDetails(b *strings.Builder, summary, text string) {
	lines := strings.Split(strings.TrimRight(safeLines(text), "\n"), "\n")
	for i, l := range lines {
		// A line with a huge value (a plan's reason) would take the room
		// of all the others.
		if len(l) > mdLineMax {
			cut := cutValue(l, 0, mdLineMax)
			lines[i] = cut + " (" + count(len(l)-len(cut)+len("…")) + " more bytes not shown)"
		}
	}
	text = strings.Join(lines, "\n") + "\n"
	const note = 120 // the cut's line, the fences' info string and the HTML
	room := maxMarkdown - b.Len() - len(summary) - note
	full := text
	for len(text)+2*longestRun(text, '`') > room-8 && text != "" {
		cut := max(0, room-8-2*longestRun(text, '`'))
		if cut >= len(text) {
			cut = len(text) - 1
		}
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
		if i := strings.LastIndexByte(text, '\n'); i >= 0 {
			text = text[:i+1] // whole lines
		}
	}
	if text != full {
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		more := strings.Count(full[len(text):], "\n")
		text += "… " + count(more) + " more line" + plural(more) + " not shown (run the command for the rest)\n"
	}
	fmt.Fprintf(b, "\n<details><summary>%s</summary>\n\n%s\n</details>\n", summary, mdFence(text))
}

// imageFields are the fields whose change is an image change.
var imageFields = map[string]string{"system.image": "system image", "container.image": "container image"}

// planMarkdown renders a plan for a pull request comment: per app the
// replicas added and removed and the steps, the image changes, what will
// be recreated rather than patched in place, and what blocks or warns.
func planMarkdown(pl plan.Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### berth plan for %s\n\n", mdCode(plan.ShortSHA(pl.Revision)))
	fmt.Fprintf(&b, "**%s**", pl.Summary())
	if pl.Owner != "" {
		fmt.Fprintf(&b, " Owner %s.", mdCode(pl.Owner))
	}
	b.WriteString("\n")
	s := summarizeSteps(pl.Steps)
	if len(s.apps) > 0 {
		b.WriteString("\n| App | Replicas | Steps |\n|---|---|---|\n")
		mdList(&b, s.appRows(), mdShareTable, "apps")
	}
	if len(s.imageOrder) > 0 {
		b.WriteString("\n**Image changes**\n\n")
		var lines []string
		for _, k := range s.imageOrder {
			lines = append(lines, fmt.Sprintf("- %s %s: %s (%s)", mdCode(k.app), k.what, mdPair(k.old, k.new, false, false), mdCodes(s.images[k])))
		}
		mdList(&b, lines, mdShareImages, "image changes")
	}
	if len(s.recreateOrder) > 0 {
		b.WriteString("\n**Recreated, not patched in place** (the instance is deleted and created again; these fields cannot change on a live instance)\n\n")
		var lines []string
		for _, k := range s.recreateOrder {
			lines = append(lines, fmt.Sprintf("- %s: %s", mdCodes(s.recreated[k]), k))
		}
		mdList(&b, lines, mdShareRecreated, "groups of recreated replicas")
	}
	if len(pl.Order) > 0 {
		fmt.Fprintf(&b, "\n**Order** (each app after the apps it depends on; removals in reverse): %s\n", mdJoin(pl.Order, "", " → "))
	}
	if warnings := planWarnings(pl); len(warnings) > 0 {
		b.WriteString("\n**Warnings**\n\n")
		mdList(&b, warnings, mdShareWarnings, "warnings")
	}
	if len(pl.Blockers()) > 0 {
		b.WriteString("\n**Blocked:** the live state cannot fully converge to this revision now.\n")
	}
	mdDetails(&b, "Full plan", planText(pl))
	return b.String()
}

// stepSummary is a plan's steps grouped for the comment, in plan order.
type stepSummary struct {
	apps       []string
	rows       map[string]*appSteps
	images     map[imageChange][]string
	imageOrder []imageChange
	// Recreated replicas, grouped by the fields that force it.
	recreated     map[string][]string
	recreateOrder []string
}

type appSteps struct {
	added, removed int
	actions        map[plan.Action]int
}

type imageChange struct{ app, what, old, new string }

func summarizeSteps(steps []plan.Step) stepSummary {
	s := stepSummary{rows: map[string]*appSteps{}, images: map[imageChange][]string{}, recreated: map[string][]string{}}
	for _, st := range steps {
		r := s.rows[st.App]
		if r == nil {
			r = &appSteps{actions: map[plan.Action]int{}}
			s.rows[st.App] = r
			s.apps = append(s.apps, st.App)
		}
		switch st.Action {
		case plan.Create:
			r.added++
		case plan.Delete:
			r.removed++
		default:
			r.actions[st.Action]++
		}
		var fields []string
		for _, reason := range st.Reasons {
			fields = append(fields, reason.Field)
			if what, ok := imageFields[reason.Field]; ok {
				k := imageChange{st.App, what, reason.Old, reason.New}
				if s.images[k] == nil {
					s.imageOrder = append(s.imageOrder, k)
				}
				s.images[k] = append(s.images[k], st.Instance)
			}
		}
		if st.Action == plan.Recreate {
			k := mdCodes(fields)
			if s.recreated[k] == nil {
				s.recreateOrder = append(s.recreateOrder, k)
			}
			s.recreated[k] = append(s.recreated[k], st.Instance)
		}
	}
	return s
}

// appRows are the rows of the table of apps: replicas added and removed,
// and the other steps by action.
func (s stepSummary) appRows() []string {
	var rows []string
	for _, app := range s.apps {
		r := s.rows[app]
		var replicas []string
		if r.added > 0 {
			replicas = append(replicas, fmt.Sprintf("+%d", r.added))
		}
		if r.removed > 0 {
			replicas = append(replicas, fmt.Sprintf("−%d", r.removed))
		}
		var steps []string
		for _, a := range plan.Actions {
			if n := r.actions[a]; n > 0 {
				steps = append(steps, fmt.Sprintf("%d %s", n, a))
			}
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s |", mdCell(mdCode(app)), strings.Join(replicas, " "), strings.Join(steps, ", ")))
	}
	return rows
}

// planWarnings is what keeps a plan from converging or deserves a look,
// one Markdown list item each.
func planWarnings(pl plan.Plan) []string {
	var warnings []string
	if pl.PruneBlocked != "" {
		warnings = append(warnings, "Pruning skipped (mass prune guard): "+mdCode(pl.PruneBlocked))
	}
	for _, c := range pl.Conflicts {
		warnings = append(warnings, fmt.Sprintf("Conflict: %s, wanted by %s, is left untouched: %s", mdCode(c.Instance), mdCode(c.App), mdCode(c.Message)))
	}
	if len(pl.Held) > 0 {
		warnings = append(warnings, "Held at their last applied state (invalid spec): "+mdCodes(pl.Held))
	}
	for _, w := range pl.Waiting {
		warnings = append(warnings, fmt.Sprintf("Waiting: %s %s, %s", mdCode(w.Instance), w.Action, mdCode(w.Why)))
	}
	for _, bl := range pl.Blocked {
		warnings = append(warnings, fmt.Sprintf("Blocked: %s (%d step%s): %s", mdCode(bl.App), bl.Steps, plural(bl.Steps), mdCode(bl.Why)))
	}
	for _, u := range pl.Unplaceable {
		warnings = append(warnings, fmt.Sprintf("Cannot be placed: %s (%s): %s", mdCode(u.Instance), u.Action, mdCode(u.Why)))
	}
	for _, u := range pl.Unready {
		warnings = append(warnings, fmt.Sprintf("Not ready: %s: %s", mdCode(u.Instance), mdCode(u.Why)))
	}
	for _, u := range pl.Unobserved {
		warnings = append(warnings, fmt.Sprintf("Not observed, waiting for another look: %s: %s", mdCode(u.Instance), mdCode(u.Why)))
	}
	for _, w := range pl.Warnings {
		warnings = append(warnings, mdCode(w))
	}
	for i, w := range warnings {
		warnings[i] = "- ⚠️ " + w
	}
	return warnings
}

// recreateField reports whether a change of the spec field at path
// recreates replicas, as the planner does: LXD cannot change these on a
// live instance. A placement change recreates the replicas on members it
// no longer allows elsewhere: it moves them.
func recreateField(path string) bool {
	p := strings.TrimPrefix(path, "spec.")
	return slices.Contains([]string{"system.image", "system.profiles", "system.cloudInit", "system.ephemeral"}, p) ||
		strings.HasPrefix(p, "system.devices.") || strings.HasPrefix(p, "system.devices[") || movesReplicas(p)
}

func movesReplicas(path string) bool {
	return strings.HasPrefix(strings.TrimPrefix(path, "spec."), "system.placement.")
}

// provisionField reports whether the field at path holds what the
// provision puts in the instance: its files and its command. Whether a
// change of them re-runs the provision is the provision hash's to say.
func provisionField(path string) bool {
	p := strings.TrimPrefix(path, "spec.")
	return p == "system.provision.files" || p == "system.provision.run"
}

// markdown renders the diff for a pull request comment. fleet is the
// number of replicas at From and appsLeft the number of apps at To: with
// them the diff warns of a prune the daemon's guard would refuse.
func (d specDiff) markdown(fleet, appsLeft int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### berth diff %s → %s\n\n", mdCode(d.From.Short()), mdCode(d.To.Short()))
	if d.To.Subject != "" {
		fmt.Fprintf(&b, "%s\n\n", mdCode(d.To.Subject))
	}
	if len(d.Apps) == 0 {
		b.WriteString("**No changes to app specs.**\n")
		return b.String()
	}
	var added, removed, changed int
	for _, a := range d.Apps {
		switch a.Change {
		case "added":
			added++
		case "removed":
			removed++
		default:
			changed++
		}
	}
	fmt.Fprintf(&b, "**%d app%s added, %d changed, %d removed.**\n\n", added, plural(added), changed, removed)
	s := d.sections()
	b.WriteString("| App | Change | Replicas | Instances |\n|---|---|---|---|\n")
	mdList(&b, s.rows, mdShareTable, "apps")
	for _, sec := range []struct {
		title string
		lines []string
		share int
		noun  string
	}{
		{"**Image changes**", s.images, mdShareImages, "image changes"},
		{"**Recreated, not patched in place** (these fields cannot change on a live instance: each replica is deleted and created again, in a rolling update)", s.recreates, mdShareRecreated, "apps recreated"},
		{"**Re-provisioned in place** (the provision's files are pushed and its command run again on each live replica: not recreated)", s.reprovisions, mdShareReprovision, "apps re-provisioned"},
		{"**Other changes**", s.others, mdShareOthers, "changes"},
		{"**Warnings**", append(pruneWarnings(s.pruned, fleet, appsLeft), s.warnings...), mdShareWarnings, "warnings"},
	} {
		if len(sec.lines) > 0 {
			b.WriteString("\n" + sec.title + "\n\n")
			mdList(&b, sec.lines, sec.share, sec.noun)
		}
	}
	var text strings.Builder
	d.writeText(&text)
	mdDetails(&b, "Full diff", text.String())
	return b.String()
}

// diffSections are the lines of a diff's sections in Markdown, app by app.
type diffSections struct {
	rows, images, recreates, reprovisions, others, warnings []string
	pruned                                                  int // replicas deleted: of the apps removed, and by scaling down
}

func (d specDiff) sections() diffSections {
	var s diffSections
	for _, a := range d.Apps {
		replicas := ""
		if a.Replicas != nil {
			replicas = fmt.Sprintf("%d → %d", a.Replicas.Old, a.Replicas.New)
		}
		s.rows = append(s.rows, fmt.Sprintf("| %s | %s | %s | %s |", mdCell(mdCode(a.Name)), a.Change, replicas, mdCell(mdInstances(a.InstancesAdded, a.InstancesRemoved))))
		s.appFields(a)
		if a.Replicas != nil && a.Change != "removed" && a.Replicas.New < a.Replicas.Old {
			// The guard counts what scaling down deletes too.
			s.pruned += a.Replicas.Old - a.Replicas.New
		}
		if a.Change == "removed" {
			s.pruned += a.Replicas.Old
			s.warnings = append(s.warnings, fmt.Sprintf("- ⚠️ Removes app %s: berth deletes its %d instance%s.", mdCode(a.Name), a.Replicas.Old, plural(a.Replicas.Old)))
		}
	}
	return s
}

// appFields sorts an app's changed fields into the sections: image
// changes, recreates, moves, re-provisions and the others.
func (s *diffSections) appFields(a appDiff) {
	var recreate, moves, reprovision []string
	for _, f := range a.Fields {
		path := strings.TrimPrefix(f.Path, "spec.")
		if what, ok := imageFields[path]; ok {
			s.images = append(s.images, fmt.Sprintf("- %s %s: %s", mdCode(a.Name), what, mdPair(f.Old, f.New, f.oldSet, f.newSet)))
			switch {
			case path == "system.image":
				recreate = append(recreate, mdCode(path))
			// container.image is required: with no old (or no new)
			// value the app gains (or loses) its container, and every
			// replica is created again with (or without) Docker.
			case path == "container.image" && f.Old == "":
				recreate = append(recreate, mdCode("container")+" added (system-only → container)")
			case path == "container.image" && f.New == "":
				recreate = append(recreate, mdCode("container")+" removed (container → system-only)")
			}
			continue
		}
		switch {
		case movesReplicas(f.Path):
			moves = append(moves, mdCode(path))
		case recreateField(f.Path):
			recreate = append(recreate, mdCode(path))
		case a.Reprovision && provisionField(f.Path):
			reprovision = append(reprovision, mdCode(path))
		}
		s.others = append(s.others, fmt.Sprintf("- %s %s: %s", mdCode(a.Name), mdCode(path), mdPair(f.Old, f.New, f.oldSet, f.newSet)))
	}
	if a.Reprovision && len(reprovision) == 0 {
		reprovision = append(reprovision, mdCode("system.provision"))
	}
	// An app's fields are a few dozen kinds at most (a device each, say):
	// its line is cut like a list of names.
	if len(recreate) > 0 {
		s.recreates = append(s.recreates, fmt.Sprintf("- %s, every replica: %s", mdCode(a.Name), mdCut(recreate)))
	}
	if len(moves) > 0 {
		s.recreates = append(s.recreates, fmt.Sprintf("- %s, each replica on a member the placement no longer allows (moves replicas): %s", mdCode(a.Name), mdCut(moves)))
	}
	if len(reprovision) > 0 {
		s.reprovisions = append(s.reprovisions, fmt.Sprintf("- %s, every replica: %s", mdCode(a.Name), mdCut(reprovision)))
	}
}

// mdInstances are the instances an app's change adds and removes, by name
// when there are a few, else by count and range: +994 (`web-6` … `web-999`).
func mdInstances(added, removed []string) string {
	if len(added)+len(removed) <= mdListMax {
		return strings.TrimSpace(mdJoin(added, "+", " ") + " " + mdJoin(removed, "−", " "))
	}
	var parts []string
	for _, side := range []struct {
		sign  string
		names []string
	}{{"+", added}, {"−", removed}} {
		if n := len(side.names); n > 0 {
			parts = append(parts, fmt.Sprintf("%s%s (%s … %s)", side.sign, count(n), mdCode(side.names[0]), mdCode(side.names[n-1])))
		}
	}
	return strings.Join(parts, " ")
}

// mdCut joins Markdown items, the first mdListMax of them.
func mdCut(items []string) string {
	if len(items) > mdListMax {
		items = append(items[:mdListMax:mdListMax], "… "+count(len(items)-mdListMax)+" more")
	}
	return strings.Join(items, ", ")
}

// pruneWarnings warns of a prune the daemon's guard would refuse: first
// among the warnings, so that a cut never drops it.
func pruneWarnings(pruned, fleet, appsLeft int) []string {
	switch {
	case appsLeft == 0 && fleet > 0:
		return []string{"- ⚠️ Mass prune: this revision has no apps at all; berth prunes nothing then unless `--allow-mass-prune`."}
	case float64(pruned) > plan.DefaultMaxPruneFraction*float64(fleet):
		return []string{fmt.Sprintf("- ⚠️ Mass prune: removing apps and scaling down deletes %d of the %d replicas; berth deletes no more than `--max-prune` (default %g%%) of its instances in one run unless `--allow-mass-prune`.",
			pruned, fleet, plan.DefaultMaxPruneFraction*100)}
	}
	return nil
}

// mdWidth is how much of a long value a comment shows, in bytes: a
// registry image with its digest fits.
const mdWidth = 160

// mdPair is both sides of a change for Markdown, shown as in the text diff
// (shownPair) and each in a code span; none reads (unset), outside one.
func mdPair(old, new string, oldSet, newSet bool) string {
	o, n := shownPair(old, new, oldSet, newSet, mdWidth)
	return mdShown(o) + " → " + mdShown(n)
}

func mdShown(s string) string {
	if s == "(unset)" {
		return s
	}
	return mdSpan(s)
}
