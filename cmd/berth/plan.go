package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/spec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/source"
)

// repoFlags select the desired state: a repository, a revision, a folder.
type repoFlags struct {
	repo string
	rev  string
	specFlags
	// secrets open the specs' secrets (plan and apply); see secretKeys.
	secrets *spec.SecretKeys
}

func (f *repoFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.repo, "repo", ".", "Git repository holding the specs: a local path or a URL")
	cmd.Flags().StringVar(&f.rev, "rev", "HEAD", "revision to converge to: branch, tag, SHA, HEAD~1, ...")
	f.specFlags.register(cmd)
}

// desired reads the specs of the selected revision and turns them into the
// planner's desired state. Invalid apps are held (kept as they are), and a
// file that does not parse at all disables pruning: berth cannot tell which
// apps it was meant to hold.
func (f *repoFlags) desired(cmd *cobra.Command) (plan.Desired, *loadedSpecs, error) {
	repo, err := source.Open(cmd.Context(), f.repo)
	if err != nil {
		return plan.Desired{}, nil, err
	}
	return f.desiredIn(cmd, repo)
}

// desiredIn is desired from a repository already open.
func (f *repoFlags) desiredIn(cmd *cobra.Command, repo *source.Repo) (plan.Desired, *loadedSpecs, error) {
	opts := f.options()
	opts.Secrets = f.secrets
	l, err := loadFromGit(cmd.Context(), repo, f.rev, f.dir, opts)
	if err != nil {
		return plan.Desired{}, nil, err
	}
	d := plan.NewDesired(l.Commit.SHA, l.Result)
	for _, diag := range l.Diagnostics() {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", safeText(diag.String()))
	}
	return d, l, nil
}

// pruneFlags guard against deleting a fleet by accident.
type pruneFlags struct {
	allowMassPrune bool
	maxPrune       float64
}

func (f *pruneFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.allowMassPrune, "allow-mass-prune", false,
		"allow a revision with no apps, or one deleting more than --max-prune of the fleet (removed apps and scale-downs), to delete")
	cmd.Flags().Var(newFractionFlag(&f.maxPrune, 0.5, 0, 1), "max-prune",
		"largest share of owned instances one run may delete, pruning removed apps and scaling down, without --allow-mass-prune, in (0, 1]")
}

// check refuses a --max-prune the planner would read as "default" (the
// flag's type already refuses it; this guards the value itself).
func (f *pruneFlags) check() error {
	if !(f.maxPrune > 0 && f.maxPrune <= 1) {
		return fmt.Errorf("--max-prune %v: want a share in (0, 1]; to never prune by accident keep it small and do not pass --allow-mass-prune", f.maxPrune)
	}
	return nil
}

func (f *pruneFlags) policy(owner string) plan.Policy {
	return plan.Policy{Owner: owner, AllowMassPrune: f.allowMassPrune, MaxPruneFraction: f.maxPrune}
}

func newPlanCmd(g *globalOptions) *cobra.Command {
	var (
		rf       repoFlags
		pf       pruneFlags
		observed string
		output   string
		srv      string
		srvToken string
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what berth would do to converge, and why",
		Long: `Plan reads the specs of a revision, compares them with what runs and prints
the steps that would converge it: creates, in-place updates, recreates,
container replacements, deletes, each with the fields that differ.

By default it observes the live LXD (see --lxd) and the Docker engine in each
instance. --observed FILE.json plans against a saved snapshot instead (the
format is documented in reconciler/README.md; "berth observe" writes one),
and --server URL against the state a running daemon observed last: one
request instead of an LXD list and a Docker tunnel into every instance, so
a pull-request check stays fast however large the fleet. That state is as
old as the daemon's last observe (it says when); apply always observes
afresh before it writes anything.

Exit status: 0 nothing to do, 2 changes, 3 blocked (the live state cannot
converge to the revision: a name taken by an instance berth does not own,
steps waiting for unready replicas, an app held for an invalid spec,
replicas no online cluster member the placement allows can take, or
pruning skipped; with or without steps to take), 1 error.`,
		Example: `  berth plan --repo .
  berth plan --repo https://git.example.org/ops/apps.git --rev main
  berth plan --repo . --observed observed.json
  berth plan --repo . --rev HEAD~1 --observed observed.json -o json
  berth plan --repo . --rev "$PR_HEAD" -o markdown > comment.md`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutputMarkdown(output); err != nil {
				return err
			}
			if err := pf.check(); err != nil {
				return err
			}
			keys, err := g.secretKeys(cmd.Context(), g.lxd.client)
			if err != nil {
				return err
			}
			rf.secrets = keys
			desired, _, err := rf.desired(cmd)
			if err != nil {
				return err
			}
			var obs plan.Observed
			switch {
			case observed != "" && srv != "":
				return errors.New("--observed and --server are two sources of the observed state: give one")
			case observed != "":
				if obs, err = readObserved(observed); err != nil {
					return err
				}
			case srv != "":
				var at time.Time
				if obs, at, err = observedFromServer(cmd.Context(), srv, srvToken); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "Planned against the state the daemon at %s observed at %s (%s ago).\n",
					safeText(srv), at.Format(time.RFC3339), g.clock.Since(at).Round(time.Second))
			default:
				sys, err := g.connect(cmd)
				if err != nil {
					return err
				}
				defer g.done(cmd, sys)
				sys.SetPorts(spec.DeclaredPorts(desired.Apps))
				if obs, err = sys.Observe(cmd.Context()); err != nil {
					return err
				}
			}
			pl := plan.MakePlan(desired, obs, pf.policy(g.owner))
			if err := writePlan(cmd, pl, output); err != nil {
				return err
			}
			switch {
			case len(planBlockers(pl)) > 0:
				return silentExit(exitBlocked)
			case !pl.Empty():
				return silentExit(exitChanges)
			}
			return nil
		},
	}
	rf.register(cmd)
	pf.register(cmd)
	cmd.Flags().StringVar(&observed, "observed", "", "plan against this observed-state snapshot (JSON) instead of live LXD")
	cmd.Flags().StringVar(&srv, "server", "", "plan against the last state a running daemon observed (http://127.0.0.1:9090): one request instead of a look into every instance")
	cmd.Flags().StringVar(&srvToken, "server-token-file", "", "file holding the daemon's sync token, when it has one (--sync-token-file of berth run)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json, or markdown (a summary for a pull request comment)")
	return cmd
}

func writePlan(cmd *cobra.Command, pl plan.Plan, output string) error {
	out := cmd.OutOrStdout()
	switch output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(pl)
	case "markdown":
		_, err := fmt.Fprint(out, planMarkdown(pl))
		return err
	}
	_, err := fmt.Fprint(out, planText(pl))
	return err
}

// planText renders a plan for people, with every value escaped. A plan
// that cannot converge ends by saying what blocks it, never "No changes.".
func planText(pl plan.Plan) string {
	safe := sanitized(pl)
	text := safe.Text()
	if blockers := planBlockers(safe); len(blockers) > 0 {
		if summary := safe.Summary() + "\n"; summary == "No changes.\n" && strings.HasSuffix(text, summary) {
			text = strings.TrimSuffix(text, summary) + "Nothing to do now.\n"
		}
		text += "Blocked: the live state cannot converge to this revision: " + strings.Join(blockers, "; ") + ".\n"
	}
	return safeLines(text)
}

// planBlockers is the long form of plan.Blockers: what keeps a plan from
// converging, naming the replicas and apps. Warnings are not blockers.
func planBlockers(pl plan.Plan) []string {
	var out []string
	for _, b := range pl.Blockers() {
		out = append(out, b.Long)
	}
	return out
}
