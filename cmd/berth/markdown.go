package main

import (
	"fmt"
	"slices"
	"strings"

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
// (GitLab's is larger): the full plan is cut first.
const maxMarkdown = 60000

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
// bidi characters, newlines), delimited by more backticks than it holds.
func mdCode(s string) string {
	if s == "" {
		return "(unset)" // plain: the comment has no emphasis a value could fake
	}
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

// mdCodes is a list of code spans: `a`, `b`.
func mdCodes(items []string) string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = mdCode(s)
	}
	return strings.Join(out, ", ")
}

// mdDetails closes a summary with the full text rendering, folded, cut
// so that the whole comment stays under maxMarkdown.
func mdDetails(b *strings.Builder, summary, text string) {
	text = safeLines(text)
	if room := maxMarkdown - b.Len() - 200; len(text) > room {
		text = strings.ToValidUTF8(text[:max(room, 0)], "") + "\n… (cut: run the command for the rest)\n"
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

	type appRow struct {
		added, removed int
		actions        map[plan.Action]int
	}
	rows := map[string]*appRow{}
	var apps []string
	type imageChange struct{ app, what, old, new string }
	images := map[imageChange][]string{}
	var imageOrder []imageChange
	// Recreated replicas, grouped by the fields that force it.
	recreated := map[string][]string{}
	var recreateOrder []string
	for _, s := range pl.Steps {
		r := rows[s.App]
		if r == nil {
			r = &appRow{actions: map[plan.Action]int{}}
			rows[s.App] = r
			apps = append(apps, s.App)
		}
		switch s.Action {
		case plan.Create:
			r.added++
		case plan.Delete:
			r.removed++
		default:
			r.actions[s.Action]++
		}
		var fields []string
		for _, reason := range s.Reasons {
			fields = append(fields, reason.Field)
			if what, ok := imageFields[reason.Field]; ok {
				k := imageChange{s.App, what, reason.Old, reason.New}
				if images[k] == nil {
					imageOrder = append(imageOrder, k)
				}
				images[k] = append(images[k], s.Instance)
			}
		}
		if s.Action == plan.Recreate {
			k := mdCodes(fields)
			if recreated[k] == nil {
				recreateOrder = append(recreateOrder, k)
			}
			recreated[k] = append(recreated[k], s.Instance)
		}
	}
	if len(apps) > 0 {
		b.WriteString("\n| App | Replicas | Steps |\n|---|---|---|\n")
		for _, app := range apps {
			r := rows[app]
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
			fmt.Fprintf(&b, "| %s | %s | %s |\n", mdCell(mdCode(app)), strings.Join(replicas, " "), strings.Join(steps, ", "))
		}
	}
	if len(imageOrder) > 0 {
		b.WriteString("\n**Image changes**\n\n")
		for _, k := range imageOrder {
			fmt.Fprintf(&b, "- %s %s: %s (%s)\n", mdCode(k.app), k.what, mdPair(k.old, k.new, false, false), mdCodes(images[k]))
		}
	}
	if len(recreateOrder) > 0 {
		b.WriteString("\n**Recreated, not patched in place** (the instance is deleted and created again; these fields cannot change on a live instance)\n\n")
		for _, k := range recreateOrder {
			fmt.Fprintf(&b, "- %s: %s\n", mdCodes(recreated[k]), k)
		}
	}
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
	for _, u := range pl.Unready {
		warnings = append(warnings, fmt.Sprintf("Not ready: %s: %s", mdCode(u.Instance), mdCode(u.Why)))
	}
	for _, w := range pl.Warnings {
		warnings = append(warnings, mdCode(w))
	}
	if len(warnings) > 0 {
		b.WriteString("\n**Warnings**\n\n")
		for _, w := range warnings {
			b.WriteString("- ⚠️ " + w + "\n")
		}
	}
	if len(pl.Blockers()) > 0 {
		b.WriteString("\n**Blocked:** the live state cannot fully converge to this revision now.\n")
	}
	mdDetails(&b, "Full plan", planText(pl))
	return b.String()
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

// defaultMaxPrune is --max-prune's default: a diff warns of a prune the
// daemon would refuse without --allow-mass-prune.
const defaultMaxPrune = 0.5

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
	var added, removed, changed, pruned int
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
	var images, recreates, reprovisions, others []string
	var warnings []string
	b.WriteString("| App | Change | Replicas | Instances |\n|---|---|---|---|\n")
	for _, a := range d.Apps {
		replicas := ""
		if a.Replicas != nil {
			replicas = fmt.Sprintf("%d → %d", a.Replicas.Old, a.Replicas.New)
		}
		var inst []string
		for _, n := range a.InstancesAdded {
			inst = append(inst, "+"+mdCode(n))
		}
		for _, n := range a.InstancesRemoved {
			inst = append(inst, "−"+mdCode(n))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdCell(mdCode(a.Name)), a.Change, replicas, mdCell(strings.Join(inst, " ")))
		var recreate, moves, reprovision []string
		for _, f := range a.Fields {
			path := strings.TrimPrefix(f.Path, "spec.")
			if what, ok := imageFields[path]; ok {
				images = append(images, fmt.Sprintf("- %s %s: %s", mdCode(a.Name), what, mdPair(f.Old, f.New, f.oldSet, f.newSet)))
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
			others = append(others, fmt.Sprintf("- %s %s: %s", mdCode(a.Name), mdCode(path), mdPair(f.Old, f.New, f.oldSet, f.newSet)))
		}
		if len(recreate) > 0 {
			recreates = append(recreates, fmt.Sprintf("- %s, every replica: %s", mdCode(a.Name), strings.Join(recreate, ", ")))
		}
		if len(moves) > 0 {
			recreates = append(recreates, fmt.Sprintf("- %s, each replica on a member the placement no longer allows (moves replicas): %s", mdCode(a.Name), strings.Join(moves, ", ")))
		}
		if a.Reprovision && len(reprovision) == 0 {
			reprovision = append(reprovision, mdCode("system.provision"))
		}
		if len(reprovision) > 0 {
			reprovisions = append(reprovisions, fmt.Sprintf("- %s, every replica: %s", mdCode(a.Name), strings.Join(reprovision, ", ")))
		}
		if a.Change == "removed" {
			pruned += a.Replicas.Old
			warnings = append(warnings, fmt.Sprintf("Removes app %s: berth deletes its %d instance%s.", mdCode(a.Name), a.Replicas.Old, plural(a.Replicas.Old)))
		}
	}
	if len(images) > 0 {
		b.WriteString("\n**Image changes**\n\n" + strings.Join(images, "\n") + "\n")
	}
	if len(recreates) > 0 {
		b.WriteString("\n**Recreated, not patched in place** (these fields cannot change on a live instance: each replica is deleted and created again, in a rolling update)\n\n")
		b.WriteString(strings.Join(recreates, "\n") + "\n")
	}
	if len(reprovisions) > 0 {
		b.WriteString("\n**Re-provisioned in place** (the provision's files are pushed and its command run again on each live replica: not recreated)\n\n")
		b.WriteString(strings.Join(reprovisions, "\n") + "\n")
	}
	if len(others) > 0 {
		b.WriteString("\n**Other changes**\n\n" + strings.Join(others, "\n") + "\n")
	}
	switch {
	case appsLeft == 0 && fleet > 0:
		warnings = append(warnings, "Mass prune: this revision has no apps at all; berth prunes nothing then unless `--allow-mass-prune`.")
	case float64(pruned) > defaultMaxPrune*float64(fleet):
		warnings = append(warnings, fmt.Sprintf("Mass prune: removing these apps deletes %d of the %d replicas; berth prunes no more than `--max-prune` (default %g%%) of its instances in one run unless `--allow-mass-prune`.",
			pruned, fleet, defaultMaxPrune*100))
	}
	if len(warnings) > 0 {
		b.WriteString("\n**Warnings**\n\n")
		for _, w := range warnings {
			b.WriteString("- ⚠️ " + w + "\n")
		}
	}
	var text strings.Builder
	d.writeText(&text)
	mdDetails(&b, "Full diff", text.String())
	return b.String()
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
	return mdCode(s) // s is escaped already, and escaping it again keeps it
}
