package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/source"
)

func newStatusCmd(g *globalOptions) *cobra.Command {
	var (
		rf     repoFlags
		pf     pruneFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each app's replicas, health, applied revision and drift",
		Long: `Status observes LXD and Docker and shows, per app: desired and ready replicas,
the revision applied to each replica, health, drift from Git and the last error.

Desired state and drift come from --repo (default ".") when it is a Git
repository; without one, only the live side is shown.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			ctx := cmd.Context()
			var desired *reconciler.Desired
			if _, err := source.Open(ctx, rf.repo); err == nil || cmd.Flags().Changed("repo") {
				d, _, err := rf.desired(cmd)
				if err != nil {
					return err
				}
				desired = &d
			}
			sys, err := g.lxd.connect(ctx, g.owner, g.logger(cmd))
			if err != nil {
				return err
			}
			defer g.done(cmd, sys)
			obs, err := sys.Observe(ctx)
			if err != nil {
				return err
			}
			var plan *reconciler.Plan
			if desired != nil {
				p := reconciler.MakePlan(*desired, obs, pf.policy(g.owner))
				plan = &p
			}
			st := reconciler.BuildStatus(g.owner, desired, obs, plan)
			if output == "json" {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), st.Text())
			return err
		},
	}
	rf.register(cmd)
	pf.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func newObserveCmd(g *globalOptions) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Save the live state as a snapshot for plan --observed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sys, err := g.lxd.connect(cmd.Context(), g.owner, g.logger(cmd))
			if err != nil {
				return err
			}
			defer g.done(cmd, sys)
			obs, err := sys.Observe(cmd.Context())
			if err != nil {
				return err
			}
			b, err := json.MarshalIndent(obs, "", "  ")
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
