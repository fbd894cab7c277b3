package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"github.com/berth-gitops/berth/spec"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// applyCmd is "berth apply": its flags, and its steps as methods.
type applyCmd struct {
	g      *globalOptions
	rf     repoFlags
	pf     pruneFlags
	lf     leaseFlags
	yes    bool
	output string
	// srv and srvToken: plan first against a daemon's last observe
	// (--server); the fresh observe before writing stays.
	srv, srvToken string
}

func newApplyCmd(g *globalOptions) *cobra.Command {
	a := &applyCmd{g: g}
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Converge LXD and Docker to a Git revision",
		Long: `Apply plans like "berth plan", shows the plan, asks for confirmation (unless
--yes, or when stdin is not a terminal), then converges: one line per step as it
starts and ends. Per app, replicas change in slot order, at most
update.maxUnavailable at a time, each becoming ready before the next; a replica
that does not become ready halts its app (Degraded) while other apps go on.

Right before executing, apply observes again and refuses a plan whose live state
changed meanwhile ("plan is stale"). With --server URL the first plan is made
against what a running daemon observed last (as "berth plan --server" does),
which spares a large fleet the first look into every instance; the fresh
observe before anything is written stays.

One writer per owner: apply holds the owner's lease (the one "berth run" takes)
from before it observes until it ends, renewed every --lease-ttl/3, and releases
it at the end (also on Ctrl-C or an error). When another apply or a daemon holds
it, apply refuses at once naming the holder and its expiry, or with --wait-lease
waits for it. If the lease is lost mid-apply, no new step starts and apply
exits 1.

Exit status: 0 converged (or nothing to do), 1 otherwise.`,
		Example: `  berth apply --repo . --yes
  berth apply --repo https://git.example.org/ops/apps.git --rev main --dir apps`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return a.run(cmd) },
	}
	a.rf.register(cmd)
	a.pf.register(cmd)
	cmd.Flags().BoolVarP(&a.yes, "yes", "y", false, "apply without asking")
	cmd.Flags().StringVar(&a.srv, "server", "", "make the first plan against the last state a running daemon observed (http://127.0.0.1:9090); apply still observes afresh before it writes")
	cmd.Flags().StringVar(&a.srvToken, "server-token-file", "", "file holding the daemon's sync token (--sync-token-file of berth run)")
	cmd.Flags().StringVarP(&a.output, "output", "o", "text", "output format of the plan and result: text or json")
	cmd.Flags().Var(newDurationFlag(&a.lf.wait, 0, 0, maxLeaseWait), "wait-lease", "when another apply or a daemon holds the owner's lease, wait up to this long for it (0: refuse at once), up to 24h")
	cmd.Flags().Var(newDurationFlag(&a.lf.ttl, 90*time.Second, minLeaseTTL, maxLeaseTTL), "lease-ttl", "how long the lease lasts if apply dies without releasing it, 3s to 1h")
	return cmd
}

// run reads the desired state, connects, and converges under the owner's
// lease.
func (a *applyCmd) run(cmd *cobra.Command) error {
	if err := checkOutput(a.output); err != nil {
		return err
	}
	var err error
	if a.rf.secrets, err = a.g.secretKeys(cmd.Context(), a.g.lxd.client); err != nil {
		return err
	}
	desired, _, err := a.rf.desired(cmd)
	if err != nil {
		return err
	}
	if err := a.pf.check(); err != nil {
		return err
	}
	if err := a.lf.check(); err != nil {
		return err
	}
	sys, err := a.g.connect(cmd)
	if err != nil {
		return err
	}
	defer a.g.done(cmd, sys)
	sys.RecordMembers = true
	// Two writers (applies, a daemon) would fight over the same instances:
	// hold the owner's lease for the whole apply. The work runs under its
	// context, which ends if the lease is lost.
	lease, err := holdLease(cmd.Context(), sys.LXD, a.g.owner, a.lf, a.g.clock, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer releaseLease(cmd.Context(), lease, a.g.clock, a.g.logger(cmd))
	return a.converge(cmd, sys, lease, desired)
}

// converge plans, asks, checks the plan is still fresh, and executes it.
// Nothing to do, at first or after planning again, ends in one place.
func (a *applyCmd) converge(cmd *cobra.Command, sys *live.System, lease *live.Held, desired plan.Desired) error {
	pl, obs, err := a.plan(cmd, sys, lease, desired)
	if err != nil {
		return err
	}
	if !pl.Empty() {
		confirmed, err := a.confirm(cmd)
		if err != nil {
			return err
		}
		if pl, obs, err = a.refresh(cmd, sys, lease, desired, pl, confirmed); err != nil {
			return err
		}
	}
	if pl.Empty() {
		return a.nothingToDo(cmd.OutOrStdout(), pl)
	}
	return a.execute(cmd, sys, lease, desired, pl, obs)
}

// The steps below work under the lease's context, which ends if the
// lease is lost.

// plan observes the live state, plans from it and shows the plan.
func (a *applyCmd) plan(cmd *cobra.Command, sys *live.System, lease *live.Held, desired plan.Desired) (plan.Plan, plan.Observed, error) {
	sys.SetPorts(spec.DeclaredPorts(desired.Apps))
	var obs plan.Observed
	var err error
	if a.srv != "" {
		var at time.Time
		if obs, at, err = observedFromServer(lease.Context(), a.srv, a.srvToken); err != nil {
			return plan.Plan{}, plan.Observed{}, err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "Planned against the state the daemon at %s observed at %s (%s ago); observing afresh before writing.\n",
			safeText(a.srv), at.Format(time.RFC3339), a.g.clock.Since(at).Round(time.Second))
	} else if obs, err = sys.Observe(lease.Context()); err != nil {
		return plan.Plan{}, plan.Observed{}, leaseLost(lease, a.g.owner, err)
	}
	pl := plan.MakePlan(desired, obs, a.pf.policy(a.g.owner))
	if a.output == "text" {
		fmt.Fprint(cmd.OutOrStdout(), planText(pl))
	}
	return pl, obs, nil
}

// confirm asks a person on a terminal to approve the plan, unless --yes;
// it reports whether someone did.
func (a *applyCmd) confirm(cmd *cobra.Command) (bool, error) {
	if a.yes || !isTerminal(cmd.InOrStdin()) {
		return false, nil
	}
	fmt.Fprint(cmd.ErrOrStderr(), "\nApply these changes? Only 'yes' is accepted: ")
	answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if strings.TrimSpace(answer) != "yes" {
		return false, &exitCodeError{code: exitError, err: fmt.Errorf("apply cancelled")}
	}
	return true, nil
}

// refresh observes again right before writing, since the world may have
// moved since the plan was made. A plan a person approved is refused if it
// is stale; one nobody reviewed is made again from what is there now, as a
// new run would, and shown.
func (a *applyCmd) refresh(cmd *cobra.Command, sys *live.System, lease *live.Held, desired plan.Desired, pl plan.Plan, confirmed bool) (plan.Plan, plan.Observed, error) {
	fresh, err := sys.Observe(lease.Context())
	if err != nil {
		return pl, plan.Observed{}, leaseLost(lease, a.g.owner, err)
	}
	if err := reconciler.CheckFresh(pl, desired, fresh); err != nil {
		if confirmed {
			return pl, fresh, err
		}
		pl = plan.MakePlan(desired, fresh, a.pf.policy(a.g.owner))
		if a.output == "text" {
			fmt.Fprintf(cmd.OutOrStdout(), "\nThe live state changed while planning; planned again:\n%s", planText(pl))
		}
	}
	return pl, fresh, nil
}

// nothingToDo ends an apply whose plan has no steps: an empty result in
// JSON, and the exit status of what may still keep it from converging.
func (a *applyCmd) nothingToDo(out io.Writer, pl plan.Plan) error {
	if a.output == "json" {
		if err := writeJSON(out, reconciler.Result{Revision: pl.Revision, Steps: []reconciler.StepResult{}}); err != nil {
			return err
		}
	}
	return heldExit(pl)
}

// execute applies the plan with progress on stderr, reports the result,
// and tells how the apply ended.
func (a *applyCmd) execute(cmd *cobra.Command, sys *live.System, lease *live.Held, desired plan.Desired, pl plan.Plan, obs plan.Observed) error {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	progress := newProgress(errOut, len(pl.Steps), isTerminal(errOut))
	sys.OnEngineEvent = progress.engineEvent
	// Ctrl-C stops new work but lets running steps finish: a replica half
	// recreated is worse than one done.
	ex := &reconciler.Executor{Driver: sys, OnEvent: progress.event, Drain: 2 * time.Minute, Clock: a.g.clock}
	start := a.g.clock.Now()
	res := ex.Apply(lease.Context(), pl, desired, obs)
	progress.finish()
	pl, res, err := a.unblocked(cmd, sys, lease, desired, ex, pl, res)
	if err != nil {
		return err
	}
	if a.output == "json" {
		if err := writeJSON(out, res); err != nil {
			return err
		}
	} else {
		writeResult(out, res, a.g.clock.Since(start))
	}
	if err := leaseLost(lease, a.g.owner, nil); err != nil {
		return err
	}
	if !res.OK() {
		return silentExit(exitError)
	}
	return heldExit(pl)
}

// unblocked goes on while the plan had apps blocked by their
// dependencies (spec.dependsOn) and what ran may have made them ready: it
// observes, plans again and applies, so that one apply converges a chain
// of dependencies from nothing, or removes one. Each round is one link
// further, so there are at most as many rounds as apps. It returns the last plan and the
// steps of every round.
func (a *applyCmd) unblocked(cmd *cobra.Command, sys *live.System, lease *live.Held, desired plan.Desired,
	ex *reconciler.Executor, pl plan.Plan, res reconciler.Result) (plan.Plan, reconciler.Result, error) {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	// A chain of apps (created, or removed from Git) is one link a round.
	rounds := len(desired.Apps) + len(pl.Blocked)
	for round := 0; res.OK() && len(pl.Blocked) > 0 && round < rounds; round++ {
		obs, err := sys.Observe(lease.Context())
		if err != nil {
			return pl, res, leaseLost(lease, a.g.owner, err)
		}
		next := plan.MakePlan(desired, obs, a.pf.policy(a.g.owner))
		if next.Empty() {
			return next, res, nil
		}
		if a.output == "text" {
			fmt.Fprintf(out, "\nDependencies progressed; planned again:\n%s", planText(next))
		}
		progress := newProgress(errOut, len(next.Steps), isTerminal(errOut))
		sys.OnEngineEvent, ex.OnEvent = progress.engineEvent, progress.event
		more := ex.Apply(lease.Context(), next, desired, obs)
		progress.finish()
		res.Steps = append(res.Steps, more.Steps...)
		for _, app := range more.Apps {
			if i := slices.IndexFunc(res.Apps, func(x reconciler.AppResult) bool { return x.App == app.App }); i >= 0 {
				res.Apps[i] = app
			} else {
				res.Apps = append(res.Apps, app)
			}
		}
		pl = next
	}
	return pl, res, nil
}

// heldExit fails an apply that converged everything it could while
// something kept the rest from converging (apps held for an invalid spec,
// conflicts, steps waiting, pruning skipped): not converged.
func heldExit(pl plan.Plan) error {
	if blockers := planBlockers(pl); len(blockers) > 0 {
		return &exitCodeError{code: exitError, err: fmt.Errorf("not converged: %s", strings.Join(blockers, "; "))}
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeResult prints the per-app summary of an apply.
func writeResult(w io.Writer, res reconciler.Result, took time.Duration) {
	counts := map[reconciler.StepStatus]int{}
	for _, s := range res.Steps {
		counts[s.Status]++
	}
	fmt.Fprintf(w, "\nApply finished in %s: %d done, %d failed, %d skipped.\n",
		took.Round(100*time.Millisecond), counts[reconciler.StepDone], counts[reconciler.StepFailed], counts[reconciler.StepSkipped])
	for _, a := range res.Apps {
		line := fmt.Sprintf("  %-20s %-9s", safeText(a.App), a.Status)
		if a.Changed > 0 {
			line += fmt.Sprintf(" %d replica step%s done", a.Changed, plural(a.Changed))
		}
		if a.Reason != "" {
			line += "  " + safeText(a.Reason)
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

// progress prints one line per step as it starts and ends; on a terminal
// it also keeps a bar on the last line.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	total int
	done  int
	tty   bool
}

func newProgress(w io.Writer, total int, tty bool) *progress {
	fmt.Fprintln(w)
	return &progress{w: w, total: total, tty: tty}
}

func (p *progress) clearBar() {
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
}

func (p *progress) drawBar() {
	if !p.tty {
		return
	}
	const width = 30
	filled := width * p.done / max(p.total, 1)
	fmt.Fprintf(p.w, "[%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat(".", width-filled), p.done, p.total)
}

func (p *progress) event(e reconciler.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearBar()
	s := e.Step
	switch e.Phase {
	case reconciler.PhaseStart:
		fmt.Fprintf(p.w, "  %-16s %-17s started\n", safeText(s.Instance), s.Action)
	case reconciler.PhaseDone:
		p.done++
		fmt.Fprintf(p.w, "  %-16s %-17s done in %s\n", safeText(s.Instance), s.Action, e.Duration.Round(100*time.Millisecond))
	case reconciler.PhaseFailed:
		p.done++
		fmt.Fprintf(p.w, "  %-16s %-17s FAILED after %s: %s\n", safeText(s.Instance), s.Action, e.Duration.Round(100*time.Millisecond), safeText(fmt.Sprint(e.Err)))
	}
	p.drawBar()
}

// engineEvent shows the Docker side of a step (pull, create, start...).
func (p *progress) engineEvent(e engine.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearBar()
	detail := e.Detail
	if e.Err != nil {
		detail = "error: " + e.Err.Error()
	}
	fmt.Fprintf(p.w, "  %-16s   %-15s %s (%s)\n", safeText(e.Instance), safeText(e.Step), safeText(detail), e.Duration.Round(10*time.Millisecond))
	p.drawBar()
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearBar()
}
