package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/source"
)

// repoFlags select the desired state: a repository, a revision, a folder.
type repoFlags struct {
	repo string
	rev  string
	specFlags
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
func (f *repoFlags) desired(cmd *cobra.Command) (reconciler.Desired, *loadedSpecs, error) {
	repo, err := source.Open(cmd.Context(), f.repo)
	if err != nil {
		return reconciler.Desired{}, nil, err
	}
	l, err := loadFromGit(cmd.Context(), repo, f.rev, f.dir, f.options())
	if err != nil {
		return reconciler.Desired{}, nil, err
	}
	d := reconciler.NewDesired(l.Commit.SHA, l.Result)
	for _, diag := range l.Diagnostics() {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning:", diag.String())
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
		"allow a revision with no apps, or one deleting more than --max-prune of the fleet, to prune")
	cmd.Flags().Var(newFractionFlag(&f.maxPrune, 0.5, 0, 1), "max-prune",
		"largest share of owned instances one run may prune without --allow-mass-prune, in (0, 1]")
}

// check refuses a --max-prune the planner would read as "default" (the
// flag's type already refuses it; this guards the value itself).
func (f *pruneFlags) check() error {
	if !(f.maxPrune > 0 && f.maxPrune <= 1) {
		return fmt.Errorf("--max-prune %v: want a share in (0, 1]; to never prune by accident keep it small and do not pass --allow-mass-prune", f.maxPrune)
	}
	return nil
}

func (f *pruneFlags) policy(owner string) reconciler.Policy {
	return reconciler.Policy{Owner: owner, AllowMassPrune: f.allowMassPrune, MaxPruneFraction: f.maxPrune}
}

func newPlanCmd(g *globalOptions) *cobra.Command {
	var (
		rf       repoFlags
		pf       pruneFlags
		observed string
		output   string
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what berth would do to converge, and why",
		Long: `Plan reads the specs of a revision, compares them with what runs and prints
the steps that would converge it: creates, in-place updates, recreates,
container replacements, deletes, each with the fields that differ.

By default it observes the live LXD (see --lxd) and the Docker engine in each
instance. --observed FILE.json plans against a saved snapshot instead (the
format is documented in reconciler/README.md; "berth observe" writes one).

Exit status: 0 nothing to do, 2 changes, 1 error.`,
		Example: `  berth plan --repo .
  berth plan --repo https://git.example.org/ops/apps.git --rev main
  berth plan --repo . --observed observed.json
  berth plan --repo . --rev HEAD~1 --observed observed.json -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if err := pf.check(); err != nil {
				return err
			}
			desired, _, err := rf.desired(cmd)
			if err != nil {
				return err
			}
			var obs reconciler.Observed
			if observed != "" {
				if obs, err = readObserved(observed); err != nil {
					return err
				}
			} else {
				sys, err := g.lxd.connect(cmd.Context(), g.owner, g.logger(cmd))
				if err != nil {
					return err
				}
				defer g.done(cmd, sys)
				if obs, err = sys.Observe(cmd.Context()); err != nil {
					return err
				}
			}
			plan := reconciler.MakePlan(desired, obs, pf.policy(g.owner))
			if err := writePlan(cmd, plan, output); err != nil {
				return err
			}
			if !plan.Empty() {
				return silentExit(exitChanges)
			}
			return nil
		},
	}
	rf.register(cmd)
	pf.register(cmd)
	cmd.Flags().StringVar(&observed, "observed", "", "plan against this observed-state snapshot (JSON) instead of live LXD")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func readObserved(path string) (reconciler.Observed, error) {
	var obs reconciler.Observed
	b, err := os.ReadFile(path)
	if err != nil {
		return obs, err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obs); err != nil {
		return obs, fmt.Errorf("%s: not an observed-state snapshot: %w", path, err)
	}
	return obs, nil
}

func writePlan(cmd *cobra.Command, plan reconciler.Plan, output string) error {
	out := cmd.OutOrStdout()
	if output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(plan)
	}
	_, err := fmt.Fprint(out, plan.Text())
	return err
}
