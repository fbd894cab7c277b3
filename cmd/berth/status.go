package main

import (
	"encoding/json"
	"fmt"
	"github.com/berth-gitops/berth/spec"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/source"
)

func newStatusCmd(g *globalOptions) *cobra.Command {
	var (
		rf     repoFlags
		pf     pruneFlags
		output string
		srv    string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each app's replicas, health, applied revision and drift",
		Long: `Status observes LXD and Docker and shows, per app: desired and ready replicas,
the revision applied to each replica, health, drift from Git and the last error.

Desired state and drift come from --repo (default ".") when it is a Git
repository; without one, only the live side is shown. With --server URL it
asks a running "berth run" instead (GET URL/api/v1/status).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			if srv != "" {
				return statusFromServer(cmd, srv, output)
			}
			desired, err := statusDesired(cmd, &rf)
			if err != nil {
				return err
			}
			sys, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer g.done(cmd, sys)
			if desired != nil {
				sys.SetPorts(spec.DeclaredPorts(desired.Apps))
			}
			obs, err := sys.Observe(ctx)
			if err != nil {
				return err
			}
			var pl *plan.Plan
			if desired != nil {
				p := plan.MakePlan(*desired, obs, pf.policy(g.owner))
				pl = &p
			}
			st := plan.BuildStatus(g.owner, desired, obs, pl)
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), safeLines(sanitized(st).Text()))
			return err
		},
	}
	rf.register(cmd)
	pf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&srv, "server", "", "read the status of a running daemon at this URL (http://127.0.0.1:9090)")
	return cmd
}

// statusDesired is the desired state status compares with: that of --repo,
// or nil when the default "." is not a repository. The repository is
// opened once (for a URL, one clone).
func statusDesired(cmd *cobra.Command, rf *repoFlags) (*plan.Desired, error) {
	repo, err := source.Open(cmd.Context(), rf.repo)
	if err != nil {
		if cmd.Flags().Changed("repo") {
			return nil, err
		}
		return nil, nil
	}
	d, _, err := rf.desiredIn(cmd, repo)
	if err != nil {
		return nil, err
	}
	return &d, nil
}

// statusFromServer reads /api/v1/status of a running daemon.
func statusFromServer(cmd *cobra.Command, base, output string) error {
	body, err := getFromServer(cmd.Context(), serverGet{base: base, path: "/api/v1/status"})
	if err != nil {
		return err
	}
	if output == "json" {
		_, err = cmd.OutOrStdout().Write(body)
		return err
	}
	var st reconciler.LoopStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return fmt.Errorf("%s: not a berth status: %w", base, err)
	}
	st = sanitized(st)
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Daemon: %s", st.Phase)
	if !st.LastRun.IsZero() {
		fmt.Fprintf(out, ", last run %s (%s)", st.LastRun.Format(time.RFC3339), st.LastResult)
	}
	fmt.Fprintln(out)
	for _, line := range []string{st.LastError, st.SourceWarning} {
		if line != "" {
			fmt.Fprintln(out, "  "+line)
		}
	}
	if st.LeaseHolder != "" {
		fmt.Fprintln(out, "  waiting for the lease held by "+st.LeaseHolder)
	}
	for _, app := range slices.Sorted(maps.Keys(st.Failures)) {
		f := st.Failures[app]
		fmt.Fprintf(out, "  %s: revision %s held until %s after %d failed rollout(s): %s\n", app, plan.ShortSHA(f.Revision), f.RetryAfter.Format(time.RFC3339), f.Count, f.Reason)
	}
	for _, app := range slices.Sorted(maps.Keys(st.LastGood)) {
		fmt.Fprintf(out, "  %s: last good revision %s\n", app, plan.ShortSHA(st.LastGood[app]))
	}
	fmt.Fprintln(out)
	_, err = fmt.Fprint(out, safeLines(st.Status.Text()))
	return err
}

func newObserveCmd(g *globalOptions) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Save the live state as a snapshot for plan --observed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sys, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer g.done(cmd, sys)
			obs, err := sys.Observe(cmd.Context())
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(normalizeObserved(obs), "", "  ")
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if file == "" || file == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			return os.WriteFile(file, b, 0o644)
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "-", "write the snapshot here")
	return cmd
}
