package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/source"
	"github.com/berth-gitops/berth/spec"
)

// specDiff is what changes between two revisions at the spec level: the
// review view of a pull request. It needs no live access.
type specDiff struct {
	From source.Commit `json:"from"`
	To   source.Commit `json:"to"`
	Apps []appDiff     `json:"apps"`
}

type appDiff struct {
	Name   string `json:"name"`
	Change string `json:"change"` // added, removed, changed
	// File is where the app is defined (in To, or in From when removed).
	File             string        `json:"file"`
	Replicas         *replicaDiff  `json:"replicas,omitempty"`
	Fields           []fieldChange `json:"fields,omitempty"`
	InstancesAdded   []string      `json:"instancesAdded,omitempty"`
	InstancesRemoved []string      `json:"instancesRemoved,omitempty"`
	// Reprovision says the provision hash changes (and a provision is
	// left): the planner runs it again on each live replica. A change of
	// what the hash leaves out, a file's source in the repo say, does not.
	Reprovision bool `json:"reprovision,omitempty"`
}

type replicaDiff struct {
	Old int `json:"old"`
	New int `json:"new"`
}

type fieldChange struct {
	Path string `json:"path"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
	// oldSet and newSet tell an empty value (env NOTE: "") from none:
	// they differ, and must not print alike.
	oldSet, newSet bool
}

func newDiffCmd() *cobra.Command {
	var (
		repoLoc string
		sf      specFlags
		output  string
	)
	cmd := &cobra.Command{
		Use:   "diff --repo REPO FROM TO",
		Short: "Show what changes between two revisions, spec by spec",
		Long: `Diff compares the app specs of two Git revisions (branches, tags, SHAs,
HEAD~1, ...) without touching LXD: apps added and removed, replica counts with
the instances they add or remove, image and config changes. It is what a pull
request review runs.

Exit status: 0 no change, 2 changes, 1 error (including an invalid spec in
either revision).`,
		Example: `  berth diff --repo . origin/main HEAD
  berth diff --repo . --dir apps HEAD~1 HEAD -o json
  berth diff --repo . origin/main HEAD -o markdown > comment.md`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputMarkdown(output); err != nil {
				return err
			}
			repo, err := source.Open(cmd.Context(), repoLoc)
			if err != nil {
				return err
			}
			var sides [2]*loadedSpecs
			for i, rev := range args {
				l, err := loadFromGit(cmd.Context(), repo, rev, sf.dir, sf.options())
				if err != nil {
					return err
				}
				if diags := l.Diagnostics(); len(diags) > 0 {
					for _, d := range diags {
						fmt.Fprintln(cmd.ErrOrStderr(), safeText(d.String()))
					}
					return &exitCodeError{code: exitError, err: fmt.Errorf("revision %s (%s) has invalid specs", rev, l.Commit.Short())}
				}
				sides[i] = l
			}
			d := diffSpecs(*sides[0].Commit, *sides[1].Commit, sides[0].Result.Apps, sides[1].Result.Apps)
			switch output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(d); err != nil {
					return err
				}
			case "markdown":
				fleet := 0
				for _, a := range sides[0].Result.Apps {
					fleet += a.Spec.Replicas
				}
				if _, err := fmt.Fprint(cmd.OutOrStdout(), d.markdown(fleet, len(sides[1].Result.Apps))); err != nil {
					return err
				}
			default:
				d.writeText(cmd.OutOrStdout())
			}
			if len(d.Apps) > 0 {
				return silentExit(exitChanges)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&repoLoc, "repo", ".", "Git repository: a local path or a URL")
	sf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json, or markdown (a summary for a pull request comment)")
	return cmd
}

// diffSpecs compares two valid spec sets. Apps are sorted by name on both
// sides (spec.Load guarantees it), so the result is deterministic.
func diffSpecs(from, to source.Commit, old, new []spec.App) specDiff {
	d := specDiff{From: from, To: to, Apps: []appDiff{}}
	byName := func(apps []spec.App) map[string]spec.App {
		m := make(map[string]spec.App, len(apps))
		for _, a := range apps {
			m[a.Metadata.Name] = a
		}
		return m
	}
	o, n := byName(old), byName(new)
	for _, name := range unionKeys(o, n) {
		a, inOld := o[name]
		b, inNew := n[name]
		switch {
		case !inOld:
			d.Apps = append(d.Apps, appDiff{Name: name, Change: "added", File: b.Origin.File,
				Replicas:       &replicaDiff{Old: 0, New: b.Spec.Replicas},
				InstancesAdded: instanceNames(name, 0, b.Spec.Replicas)})
		case !inNew:
			d.Apps = append(d.Apps, appDiff{Name: name, Change: "removed", File: a.Origin.File,
				Replicas:         &replicaDiff{Old: a.Spec.Replicas, New: 0},
				InstancesRemoved: instanceNames(name, 0, a.Spec.Replicas)})
		default:
			ad := appDiff{Name: name, Change: "changed", File: b.Origin.File}
			if a.Spec.Replicas != b.Spec.Replicas {
				ad.Replicas = &replicaDiff{Old: a.Spec.Replicas, New: b.Spec.Replicas}
				ad.InstancesAdded = instanceNames(name, a.Spec.Replicas, b.Spec.Replicas)
				ad.InstancesRemoved = instanceNames(name, b.Spec.Replicas, a.Spec.Replicas)
				slices.Reverse(ad.InstancesRemoved) // highest slots go first
			}
			ad.Fields = fieldChanges(a.Spec, b.Spec)
			newProv := b.Spec.System.Provision.Hash()
			ad.Reprovision = newProv != "" && newProv != a.Spec.System.Provision.Hash()
			if ad.Replicas != nil || len(ad.Fields) > 0 {
				d.Apps = append(d.Apps, ad)
			}
		}
	}
	return d
}

func instanceNames(app string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%d", app, i))
	}
	return out
}

// fieldChanges flattens both specs to path -> value and lists the paths
// that differ, a value set to "" differing from none. Maps are walked key
// by key (so one config key shows as one line); lists compare as a whole,
// since an element's position is its identity only by accident.
func fieldChanges(a, b spec.AppSpec) []fieldChange {
	fa, fb := flatten(a), flatten(b)
	var out []fieldChange
	for _, p := range unionKeys(fa, fb) {
		old, oldSet := fa[p]
		new, newSet := fb[p]
		if p == "spec.replicas" || oldSet == newSet && old == new {
			continue
		}
		out = append(out, fieldChange{Path: p, Old: old, New: new, oldSet: oldSet, newSet: newSet})
	}
	return out
}

// unionKeys returns the keys of both maps, sorted, each once.
func unionKeys[V any](a, b map[string]V) []string {
	keys := slices.AppendSeq(slices.Collect(maps.Keys(a)), maps.Keys(b))
	slices.Sort(keys)
	return slices.Compact(keys)
}

func flatten(s spec.AppSpec) map[string]string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain data only
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch t := v.(type) {
		case map[string]any:
			// Keys are written as validate writes them, a dotted key
			// quoted: device data's key x.type and device data.x's key
			// type are different fields, and must not flatten alike.
			for k, c := range t {
				walk(spec.AppendPathKey(prefix, k), c)
			}
		case string:
			out[prefix] = t
		case nil:
		default:
			j, _ := json.Marshal(t)
			out[prefix] = string(j)
		}
	}
	walk("spec", v)
	return out
}

// writeText prints the diff for people; every name and value is escaped,
// long values are cut and multi-line values summarised (see shownPair).
func (d specDiff) writeText(w io.Writer) {
	d = sanitized(d)
	fmt.Fprintf(w, "berth diff %s..%s\n", d.From.Short(), d.To.Short())
	if len(d.Apps) == 0 {
		fmt.Fprintln(w, "No changes to app specs.")
		return
	}
	var added, removed, changed int
	for _, a := range d.Apps {
		fmt.Fprintln(w)
		switch a.Change {
		case "added":
			added++
			fmt.Fprintf(w, "+ %s (new app, %s)\n", a.Name, a.File)
			fmt.Fprintf(w, "    replicas: %d (%s)\n", a.Replicas.New, signed("+", a.InstancesAdded))
		case "removed":
			removed++
			fmt.Fprintf(w, "- %s (removed, was in %s)\n", a.Name, a.File)
			fmt.Fprintf(w, "    replicas: %d → 0 (%s)\n", a.Replicas.Old, signed("-", a.InstancesRemoved))
		default:
			changed++
			fmt.Fprintf(w, "~ %s (%s)\n", a.Name, a.File)
			if a.Replicas != nil {
				fmt.Fprintf(w, "    replicas: %d → %d (%s)\n", a.Replicas.Old, a.Replicas.New,
					signed("+", a.InstancesAdded)+signed("-", a.InstancesRemoved))
			}
			for _, f := range a.Fields {
				old, new := f.shown(textWidth)
				fmt.Fprintf(w, "    %s: %s → %s\n", strings.TrimPrefix(f.Path, "spec."), old, new)
			}
		}
	}
	fmt.Fprintf(w, "\n%d app%s added, %d changed, %d removed.\n", added, plural(added), changed, removed)
}

func signed(sign string, names []string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = sign + n
	}
	return strings.Join(parts, ", ")
}

// textWidth is how much of a long value a text diff shows, in bytes.
const textWidth = 80

// shown is both sides of a changed field for one line each, at most
// width bytes of a value.
func (f fieldChange) shown(width int) (old, new string) {
	return shownPair(f.Old, f.New, f.oldSet, f.newSet, width)
}

// shownPair shows the two sides of a change, each escaped for one line:
// a value as it is, or a cut of it when longer than width; "" for an
// empty value and (unset) for none; a multi-line value (cloud-init) by
// size and hash, as plan shows it. A change must never print as no
// change: a long value is cut around where the two first differ (the
// common start elided), and two sides that still read alike (an escape
// that reads like a literal backslash sequence, say) get the short hash
// of each.
func shownPair(old, new string, oldSet, newSet bool, width int) (string, string) {
	from := 0 // where the cuts start: before the first difference, if late
	if p := commonPrefix(old, new); p > width-width/4 {
		from = p - width/4
	}
	o, n := shownValue(old, oldSet, from, width), shownValue(new, newSet, from, width)
	if o == n {
		o, n = withHash(o, old, oldSet), withHash(n, new, newSet)
	}
	return o, n
}

func shownValue(v string, set bool, from, width int) string {
	switch {
	case v == "" && !set:
		return "(unset)"
	case v == "":
		return `""`
	case strings.ContainsAny(v, "\n\r"):
		return plan.LinesSummary(v)
	}
	return safeText(cutValue(v, from, width))
}

// cutValue is v when it fits in width bytes, else width bytes of it from
// about from, with … where it was cut.
func cutValue(v string, from, width int) string {
	if len(v) <= width {
		return v
	}
	for from > 0 && !utf8.RuneStart(v[from]) {
		from--
	}
	end := min(len(v), from+width)
	for end < len(v) && !utf8.RuneStart(v[end]) {
		end--
	}
	text := v[from:end]
	if from > 0 {
		text = "…" + text
	}
	if end < len(v) {
		text += "…"
	}
	return text
}

func withHash(shown, v string, set bool) string {
	if v == "" && !set {
		return shown
	}
	sum := sha256.Sum256([]byte(v))
	return shown + " (sha256:" + hex.EncodeToString(sum[:])[:12] + ")"
}

// commonPrefix is the length in bytes of the longest common start of a and b.
func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
