package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
)

// Action is what a step does to one replica. The set is closed: the
// executor handles each of these and nothing else.
type Action int

const (
	// Create makes a missing instance (and its app container) from the spec.
	Create Action = iota + 1
	// Start starts (or unfreezes) an instance that is not running, runs
	// its provision when a reason says it is due (ProvisionNeeded), then
	// ensures its app container matches ContainerHash: Docker cannot be
	// seen in a stopped instance, so that part is decided at apply time.
	Start
	// UpdateInPlace patches the instance's config live (limits, plain
	// config keys, berth's own keys) and deletes keys the spec dropped.
	UpdateInPlace
	// Recreate deletes the instance and creates it again from the spec:
	// image, profiles, devices and cloud-init cannot change in place.
	Recreate
	// ReplaceContainer removes the app container and creates it anew.
	ReplaceContainer
	// CreateContainer creates the missing app container of a running instance.
	CreateContainer
	// StartContainer starts an app container that exists but is not running.
	StartContainer
	// Delete deletes an instance: scale-down or an app removed from Git.
	Delete
	// Restart repairs a running instance whose Docker does not answer: the
	// executor waits a bounded time (RepairWait) for Docker, restarts the
	// instance only if it stays silent, then ensures the app container.
	Restart
	// RemoveLeftovers removes berth's containers of the app other than the
	// current one (a "<app>-next" left by a killed rollout).
	RemoveLeftovers
	// Provision re-runs the app's system.provision in the running
	// instance, in place: its content changed, a run failed, or it is due
	// again (provision.every). The app container is restarted afterwards
	// only with provision.restartContainer.
	Provision
)

var actionNames = [...]string{
	Create:           "create",
	Start:            "start",
	UpdateInPlace:    "update-in-place",
	Recreate:         "recreate",
	ReplaceContainer: "replace-container",
	CreateContainer:  "create-container",
	StartContainer:   "start-container",
	Delete:           "delete",
	Restart:          "restart",
	RemoveLeftovers:  "remove-leftovers",
	Provision:        "provision",
}

// Actions lists every action, in the order summaries count them.
var Actions = []Action{Create, Start, UpdateInPlace, Provision, Recreate, Restart, ReplaceContainer, CreateContainer, StartContainer, RemoveLeftovers, Delete}

func (a Action) String() string {
	if a > 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// ParseAction is the inverse of Action.String.
func ParseAction(s string) (Action, error) {
	for _, a := range Actions {
		if actionNames[a] == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("unknown action %q", s)
}

// MarshalJSON writes the action's name, so plan files read "recreate".
func (a Action) MarshalJSON() ([]byte, error) {
	if a <= 0 || int(a) >= len(actionNames) {
		return nil, fmt.Errorf("reconciler: cannot marshal %v", a)
	}
	return json.Marshal(actionNames[a])
}

// UnmarshalJSON reads an action's name.
func (a *Action) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("action must be a string: %w", err)
	}
	v, err := ParseAction(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

// Disruptive reports whether the action takes a serving replica out of
// service while it runs. Recreate, ReplaceContainer and Restart stop the
// app; Delete removes it. Create adds a replica; UpdateInPlace patches
// limits and config live; Start, CreateContainer and StartContainer act
// on a replica that is not serving anyway. Provision is a rolling step:
// a replica being configured is taken out of service. Only disruptive
// steps on available replicas count against update.maxUnavailable.
func (a Action) Disruptive() bool {
	switch a {
	case Recreate, ReplaceContainer, Restart, Delete, Provision:
		return true
	}
	return false
}

// containerStep reports whether the action converges the app container
// of a running instance (and so also removes its leftovers).
func (a Action) containerStep() bool {
	switch a {
	case ReplaceContainer, CreateContainer, StartContainer, RemoveLeftovers:
		return true
	}
	return false
}

// Reason is one difference that motivates a step.
type Reason struct {
	// Field names what differs in spec terms: "replicas", "system.image",
	// "system.limits.memory", "system.config.<key>", "system.devices.<name>",
	// "container.image", "container.secretFiles[<target>]" (see
	// SecretField), "container-hash", "status", or a user.berth.* key
	// when only berth's bookkeeping differs.
	Field string `json:"field"`
	// Old is the observed value ("" when absent).
	Old string `json:"old"`
	// New is the desired value ("" when the key is to be removed).
	New string `json:"new"`
}

// What a secret file's reason says (its New; Old is empty): that its
// value changed, or that the container gains or loses it. Nothing else
// about a secret is ever in a plan.
const (
	SecretChanged = "changed"
	SecretAdded   = "added"
	SecretRemoved = "removed"
)

// SecretField is the Field of a reason about the secret file at target:
// container.secretFiles[/run/secrets/db_password].
func SecretField(target string) string { return "container.secretFiles[" + target + "]" }

// secret reports whether r is about a secret file, and so reads
// "field: changed" rather than "field: old → new".
func (r Reason) secret() bool { return strings.HasPrefix(r.Field, "container.secretFiles[") }

// Step is one action on one replica.
type Step struct {
	// App is the app the replica belongs to (for a prune, the removed app).
	App string `json:"app"`
	// Slot is the replica's slot; the instance is <app>-<slot>.
	Slot int `json:"slot"`
	// Instance is the LXD instance name the step acts on.
	Instance string `json:"instance"`
	// Action is what to do.
	Action Action `json:"action"`
	// Batch orders an app's rollout: batches run in increasing order, and
	// the steps of one batch may run together (steps on the same instance
	// run in plan order). Numbers start at 1 and are per app; different
	// apps are independent of each other.
	Batch int `json:"batch"`
	// Reasons are the differences that make the step necessary.
	Reasons []Reason `json:"reasons,omitempty"`
	// SystemHash is the system hash the instance has after the step
	// (empty for Delete).
	SystemHash string `json:"systemHash,omitempty"`
	// ContainerHash is the container hash the app container has after the
	// step (empty for Delete).
	ContainerHash string `json:"containerHash,omitempty"`
	// ProvisionHash is the provision hash the instance has after the step
	// (empty when the app has no provision).
	ProvisionHash string `json:"provisionHash,omitempty"`
	// Target is the cluster member a create or recreate builds the
	// instance on ("" on a single host).
	Target string `json:"target,omitempty"`
	// Volumes are the replica's volumes (spec.system.volumes): those a
	// create or recreate attaches, those an update grows, and, on a
	// Delete, those it keeps or deletes.
	Volumes []StepVolume `json:"volumes,omitempty"`
}

// ProvisionNeeded reports whether the step must run the app's provision:
// a Provision step, or a Start whose reasons include the provision.
func (s Step) ProvisionNeeded() bool {
	if s.Action == Provision {
		return true
	}
	for _, r := range s.Reasons {
		if r.Field == "system.provision" || r.Field == "system.provision.every" {
			return true
		}
	}
	return false
}

// Conflict is an instance whose name an app wants but that is not berth's
// (unowned, or owned by another owner, or berth's but labelled for
// another replica). Berth never touches it; the slot stays unserved. An
// instance of berth's whose keys name no replica is a conflict too, in or
// out of its app's slot range: it needs a person.
type Conflict struct {
	// Instance is the clashing instance's name.
	Instance string `json:"instance"`
	// App is the app that wants the name; for one of berth's instances
	// with garbled keys, the app its name or its keys point to ("" when
	// neither does).
	App string `json:"app"`
	// Owner is the instance's user.berth.owner ("" when unowned).
	Owner string `json:"owner"`
	// Message says what is wrong, for people.
	Message string `json:"message"`
}

// Waiting is a step the plan holds back this run, and why: the app's
// rollout budget (update.maxUnavailable) is used up by replicas that are
// not ready. The replica still differs from Git; it is not "no changes".
type Waiting struct {
	Step
	// Why names the unavailable replicas that hold the rollout.
	Why string `json:"why"`
}

// Unready is a replica that has its desired spec and is not ready, with
// no step that would fix it: a crash-looping or unhealthy container, a
// declared port nothing listens on. The app has not converged.
type Unready struct {
	App      string `json:"app"`
	Instance string `json:"instance"`
	// Why is what is wrong: "container unhealthy", "closed ports 9999/tcp".
	Why string `json:"why"`
}

// Unplaceable is a replica that the app's placement allows on no online
// cluster member: it is not created (or, on a member the placement no
// longer allows, not moved) this run. A typo in placement.members or a
// cluster whose allowed members are all offline leaves the app short of
// replicas, which is not "no changes".
type Unplaceable struct {
	App      string `json:"app"`
	Instance string `json:"instance"`
	// Action is the step that cannot be planned: create or recreate.
	Action Action `json:"action"`
	// Why says why no member can take it: "placement.members: m9 is not a
	// cluster member", "m1 offline, m2 evacuated".
	Why string `json:"why"`
}

// Plan is the result of planning: what would change, in which order, and
// why. It is a value; the executor consumes it.
type Plan struct {
	// Revision is the Git SHA of the desired state planned for.
	Revision string `json:"revision"`
	// Owner is the owner id the plan acts as.
	Owner string `json:"owner"`
	// ObservedFingerprint is a SHA-256 of the observed state that matters
	// for planning (berth's instances and those clashing with its names,
	// without volatile.* keys). Apply refuses a plan whose fingerprint no
	// longer matches what it observes: the plan is stale.
	ObservedFingerprint string `json:"observedFingerprint"`
	// Steps are ordered by app, then batch, then slot (scale-down and
	// prune deletes: highest slot first).
	Steps []Step `json:"steps"`
	// Conflicts are names berth wants but may not touch.
	Conflicts []Conflict `json:"conflicts,omitempty"`
	// Held are the apps kept at their last applied state because their
	// spec is invalid at this revision.
	Held []string `json:"held,omitempty"`
	// Waiting are steps held back this run (see Waiting). The executor
	// does not run them; a later run plans them again.
	Waiting []Waiting `json:"waiting,omitempty"`
	// Unready are replicas with their desired spec that are not ready and
	// that no step fixes.
	Unready []Unready `json:"unready,omitempty"`
	// Unobserved are running replicas whose Docker could not be looked at
	// this run because LXD did not set up the tunnel (Instance.DockerUnknown):
	// their containers' steps wait for a later look, and they are counted
	// as serving.
	Unobserved []Unready `json:"unobserved,omitempty"`
	// Unplaceable are replicas no cluster member can take (see
	// Unplaceable).
	Unplaceable []Unplaceable `json:"unplaceable,omitempty"`
	// Blocked are apps whose steps wait for their dependencies (see
	// Blocked), by name.
	Blocked []Blocked `json:"blocked,omitempty"`
	// Order is the apps that depend on others or that others depend on,
	// in the order they converge: each after its dependencies (removals
	// go the other way).
	Order []string `json:"order,omitempty"`
	// PruneBlocked says why pruning was skipped, if it was.
	PruneBlocked string `json:"pruneBlocked,omitempty"`
	// Warnings are things people should know that change no step: foreign
	// containers, Docker unreachable, instances with garbled berth keys.
	Warnings []string `json:"warnings,omitempty"`
}

// Empty reports whether the plan has no step to run now. Conflicts,
// waiting steps, warnings and held apps are not steps.
func (p Plan) Empty() bool { return len(p.Steps) == 0 }

// Converged reports whether the live state matches Git as far as this plan
// can tell: nothing to run, nothing waiting, no wanted name blocked, no app
// held at an older state, and no prune skipped.
func (p Plan) Converged() bool {
	return len(p.Steps) == 0 && len(p.Blockers()) == 0
}

// Blocker is one reason the live state cannot converge to the revision
// this run, whatever steps there are: Short for the summary line, Long
// (naming the replicas or apps) for the report.
type Blocker struct {
	Short, Long string
}

// Blockers lists what keeps the plan from converging: steps waiting for
// unready replicas, names taken by instances berth does not own, apps held
// at an older state, replicas not ready that no step fixes, replicas no
// cluster member can take, a skipped prune. Converged, Summary and the CLI's exit codes all read this one
// list, so a new kind of blocker is added here once.
func (p Plan) Blockers() []Blocker {
	var out []Blocker
	list := func(n int, name func(int) string, sep string) string {
		names := make([]string, n)
		for i := range names {
			names[i] = name(i)
		}
		return strings.Join(names, sep)
	}
	if n := len(p.Waiting); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d waiting", n),
			fmt.Sprintf("%d step%s waiting (%s)", n, plural(n), list(n, func(i int) string { return p.Waiting[i].Instance }, ", "))})
	}
	if n := len(p.Conflicts); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d blocked by a conflict", n),
			fmt.Sprintf("%d replica%s blocked by a conflict (%s)", n, plural(n), list(n, func(i int) string { return p.Conflicts[i].Instance }, ", "))})
	}
	if n := len(p.Held); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d app(s) held", n),
			fmt.Sprintf("%d app%s held for an invalid spec (%s)", n, plural(n), strings.Join(p.Held, ", "))})
	}
	if n := len(p.Unobserved); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d unobserved", n),
			fmt.Sprintf("%d replica%s not observed, waiting for another look (%s)", n, plural(n), list(n, func(i int) string { return p.Unobserved[i].Instance + ": " + p.Unobserved[i].Why }, "; "))})
	}
	if n := len(p.Unready); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d not ready", n),
			fmt.Sprintf("%d replica%s not ready (%s)", n, plural(n), list(n, func(i int) string { return p.Unready[i].Instance + ": " + p.Unready[i].Why }, "; "))})
	}
	if n := len(p.Blocked); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d app(s) blocked by dependencies", n),
			fmt.Sprintf("%d app%s blocked by dependencies (%s)", n, plural(n), list(n, func(i int) string { return p.Blocked[i].App + ": " + p.Blocked[i].Why }, "; "))})
	}
	if n := len(p.Unplaceable); n > 0 {
		out = append(out, Blocker{fmt.Sprintf("%d cannot be placed", n),
			fmt.Sprintf("%d replica%s cannot be placed (%s)", n, plural(n), unplaceableList(p.Unplaceable))})
	}
	if p.PruneBlocked != "" {
		out = append(out, Blocker{"pruning skipped", "pruning skipped"})
	}
	return out
}

// unplaceableList names the replicas, each run of them with the same
// reason once: "web-0, web-1: placement.members: m9 is not a cluster
// member".
func unplaceableList(us []Unplaceable) string {
	var parts []string
	for i := 0; i < len(us); {
		j := i + 1
		for j < len(us) && us[j].Why == us[i].Why {
			j++
		}
		names := make([]string, 0, j-i)
		for _, u := range us[i:j] {
			names = append(names, u.Instance)
		}
		parts = append(parts, strings.Join(names, ", ")+": "+us[i].Why)
		i = j
	}
	return strings.Join(parts, "; ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// summaryParts says how each action is counted in Summary.
var summaryParts = map[Action][2]string{
	Create:           {"%d to create", "%d to create"},
	Start:            {"%d to start", "%d to start"},
	UpdateInPlace:    {"%d to update in place", "%d to update in place"},
	Provision:        {"%d to provision", "%d to provision"},
	Recreate:         {"%d to recreate", "%d to recreate"},
	ReplaceContainer: {"%d container replacement", "%d container replacements"},
	CreateContainer:  {"%d container to create", "%d containers to create"},
	StartContainer:   {"%d container to start", "%d containers to start"},
	Delete:           {"%d to delete", "%d to delete"},
	Restart:          {"%d to repair (restart)", "%d to repair (restart)"},
	RemoveLeftovers:  {"%d leftover container cleanup", "%d leftover container cleanups"},
}

// Summary is one line: "Plan: 2 to create, 1 to recreate, 1 to delete.",
// "No changes.", or, when something still differs but cannot be changed
// now, "Nothing to do now: 2 waiting, 1 blocked by a conflict, 1 app(s)
// held, pruning skipped.".
func (p Plan) Summary() string {
	if p.Empty() {
		if p.Converged() {
			return "No changes."
		}
		var parts []string
		for _, b := range p.Blockers() {
			parts = append(parts, b.Short)
		}
		return "Nothing to do now: " + strings.Join(parts, ", ") + "."
	}
	var counts [len(actionNames)]int
	for _, s := range p.Steps {
		if s.Action > 0 && int(s.Action) < len(counts) {
			counts[s.Action]++
		}
	}
	var parts []string
	for _, a := range Actions {
		n := counts[a]
		if n == 0 {
			continue
		}
		f := summaryParts[a][1]
		if n == 1 {
			f = summaryParts[a][0]
		}
		parts = append(parts, fmt.Sprintf(f, n))
	}
	return "Plan: " + strings.Join(parts, ", ") + "."
}

// GoString is the summary, so %#v of a plan in a test failure reads well.
func (p Plan) GoString() string { return p.Summary() }

var actionSymbols = [...]string{
	Create:           "+",
	Start:            ">",
	UpdateInPlace:    "~",
	Recreate:         "-/+",
	ReplaceContainer: "-/+",
	CreateContainer:  "+",
	StartContainer:   ">",
	Delete:           "-",
	Restart:          "-/+",
	RemoveLeftovers:  "-",
	Provision:        "~",
}

func (a Action) symbol() string {
	if a > 0 && int(a) < len(actionSymbols) {
		return actionSymbols[a]
	}
	return "?"
}

// Text renders the plan for people: steps grouped per app and batch, then
// conflicts, held apps, the prune notice, warnings and the summary.
func (p Plan) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Revision %s, owner %s\n", orDash(p.Revision), orDash(p.Owner))

	// Column widths over the whole plan keep the output aligned.
	wName, wAction := 0, 0
	for _, s := range p.Steps {
		wName = max(wName, len(s.Instance))
		wAction = max(wAction, len(s.Action.String()))
	}
	for _, w := range p.Waiting {
		wName = max(wName, len(w.Instance))
		wAction = max(wAction, len(w.Action.String()))
	}
	app, batch := "", -1
	for i, s := range p.Steps {
		if i == 0 || s.App != app {
			app, batch = s.App, -1
			fmt.Fprintf(&b, "\n%s:\n", s.App)
		}
		if s.Batch != batch {
			batch = s.Batch
			fmt.Fprintf(&b, "  batch %d\n", s.Batch)
		}
		b.WriteString(formatStep(s, wName, wAction))
	}
	if len(p.Waiting) > 0 {
		b.WriteString("\nWaiting (held back this run; the replicas still differ):\n")
		for _, w := range p.Waiting {
			b.WriteString(formatStep(w.Step, wName, wAction))
			fmt.Fprintf(&b, "        waits: %s\n", w.Why)
		}
	}
	if len(p.Blocked) > 0 {
		b.WriteString("\nBlocked by dependencies (their steps wait):\n")
		for _, bl := range p.Blocked {
			fmt.Fprintf(&b, "  … %s (%d step%s): %s\n", bl.App, bl.Steps, plural(bl.Steps), bl.Why)
		}
	}
	if len(p.Unready) > 0 {
		b.WriteString("\nNot ready, and no step would fix it (the desired spec runs):\n")
		for _, u := range p.Unready {
			fmt.Fprintf(&b, "  ? %s: %s\n", u.Instance, u.Why)
		}
	}
	if len(p.Unplaceable) > 0 {
		b.WriteString("\nCannot be placed (no online cluster member the placement allows):\n")
		for _, u := range p.Unplaceable {
			fmt.Fprintf(&b, "  ! %s (%s): %s\n", u.Instance, u.Action, u.Why)
		}
	}
	if len(p.Conflicts) > 0 {
		b.WriteString("\nConflicts (left untouched):\n")
		for _, c := range p.Conflicts {
			if c.App == "" {
				fmt.Fprintf(&b, "  ! %s: %s\n", c.Instance, c.Message)
				continue
			}
			fmt.Fprintf(&b, "  ! %s (wanted by %s): %s\n", c.Instance, c.App, c.Message)
		}
	}
	if len(p.Held) > 0 {
		b.WriteString("\nHeld at their last applied state (invalid spec):\n")
		for _, h := range p.Held {
			fmt.Fprintf(&b, "  = %s\n", h)
		}
	}
	if p.PruneBlocked != "" {
		fmt.Fprintf(&b, "\nPruning skipped: %s\n", p.PruneBlocked)
	}
	if len(p.Warnings) > 0 {
		b.WriteString("\nWarnings:\n")
		for _, w := range p.Warnings {
			fmt.Fprintf(&b, "  * %s\n", w)
		}
	}
	b.WriteString("\n" + p.Summary() + "\n")
	return b.String()
}

// formatStep is one step of Text: symbol, instance, action and reasons.
func formatStep(s Step, wName, wAction int) string {
	line := fmt.Sprintf("    %-3s %-*s  %-*s", s.Action.symbol(), wName, s.Instance, wAction, s.Action.String())
	if len(s.Reasons) > 0 {
		rs := make([]string, len(s.Reasons))
		for j, r := range s.Reasons {
			if r.secret() {
				rs[j] = r.Field + ": " + r.New
				continue
			}
			rs[j] = fmt.Sprintf("%s: %s → %s", r.Field, displayValue(r.Old), displayValue(r.New))
		}
		line += "  (" + strings.Join(rs, "; ") + ")"
	}
	if s.Target != "" {
		line += "  on " + s.Target
	}
	return strings.TrimRight(line, " ") + "\n"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// displayValue keeps reasons on one line: absent values read "(unset)",
// and multi-line values such as cloud-init are shown by size and hash.
func displayValue(v string) string {
	if v == "" {
		return "(unset)"
	}
	if strings.ContainsAny(v, "\n\r") {
		return LinesSummary(v)
	}
	return v
}

// LinesSummary is a multi-line value (cloud-init) on one line, by size
// and hash: "<2 lines, sha256:0123456789ab>". berth diff shows it alike.
func LinesSummary(v string) string {
	sum := sha256.Sum256([]byte(v))
	return fmt.Sprintf("<%d lines, sha256:%s>", strings.Count(strings.TrimRight(v, "\n"), "\n")+1, hex.EncodeToString(sum[:])[:12])
}

// ShortSHA abbreviates a Git SHA to the 12 digits people read in output.
func ShortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
