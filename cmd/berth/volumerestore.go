package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// volumeRestoreCmd is "berth volume restore REPLICA NAME SNAPSHOT".
type volumeRestoreCmd struct {
	g  *globalOptions
	rf repoFlags
	lf leaseFlags
}

func newVolumeCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Act on one replica's volume (restore a snapshot)",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newVolumeRestoreCmd(g))
	return cmd
}

func newVolumeRestoreCmd(g *globalOptions) *cobra.Command {
	r := &volumeRestoreCmd{g: g}
	cmd := &cobra.Command{
		Use:   "restore REPLICA VOLUME SNAPSHOT",
		Short: "Roll a replica's volume back to one of its snapshots, through the health gate",
		Long: `restore rolls the volume VOLUME (its name in system.volumes) of the replica
REPLICA (<app>-<slot>) back to its snapshot SNAPSHOT ("berth volumes" lists
them; a recreate takes berth-<revision>). Like apply, it holds the owner's
lease; it drains the replica, stops it, restores the snapshot, starts it
again and waits until it is ready (update.healthTimeout). If the restore
fails, the replica is started again on the data it had.

The app's spec is read from the repository (--repo, --rev) as apply reads
it, for the health gate; a replica with changes pending there is refused:
apply first. Exit status: 0 restored and ready, 1 otherwise.`,
		Example: `  berth volume restore kv-1 data berth-0123456789ab --repo .`,
		Args:    cobra.ExactArgs(3),
		RunE:    func(cmd *cobra.Command, args []string) error { return r.run(cmd, args[0], args[1], args[2]) },
	}
	r.rf.register(cmd)
	cmd.Flags().Var(newDurationFlag(&r.lf.wait, 0, 0, maxLeaseWait), "wait-lease", "when another apply or a daemon holds the owner's lease, wait up to this long for it (0: refuse at once), up to 24h")
	cmd.Flags().Var(newDurationFlag(&r.lf.ttl, 90*time.Second, minLeaseTTL, maxLeaseTTL), "lease-ttl", "how long the lease lasts if restore dies without releasing it, 3s to 1h")
	return cmd
}

func (r *volumeRestoreCmd) run(cmd *cobra.Command, replica, volume, snapshot string) error {
	if err := r.lf.check(); err != nil {
		return err
	}
	var err error
	if r.rf.secrets, err = r.g.secretKeys(cmd.Context(), r.g.lxd.client); err != nil {
		return err
	}
	desired, _, err := r.rf.desired(cmd)
	if err != nil {
		return err
	}
	sys, err := r.g.connect(cmd)
	if err != nil {
		return err
	}
	defer r.g.done(cmd, sys)
	lease, err := holdLease(cmd.Context(), sys.LXD, r.g.owner, r.lf, r.g.clock, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	defer releaseLease(cmd.Context(), lease, r.g.clock, r.g.logger(cmd))
	ctx := lease.Context()
	obs, err := sys.Observe(ctx)
	if err != nil {
		return leaseLost(lease, r.g.owner, err)
	}
	target, err := restoreTarget(desired, obs, plan.Policy{Owner: r.g.owner}, replica, volume)
	if err != nil {
		return err
	}
	if err := checkSnapshot(ctx, sys, target.Volume, snapshot); err != nil {
		return err
	}
	target.Snapshot = snapshot
	fmt.Fprintf(cmd.ErrOrStderr(), "Restoring %s of %s to %s: draining and stopping %s.\n", safeText(target.Volume.Name), safeText(replica), safeText(snapshot), safeText(replica))
	start := r.g.clock.Now()
	ex := &reconciler.Executor{Driver: sys, Clock: r.g.clock}
	err = ex.RestoreVolume(ctx, target)
	if lost := leaseLost(lease, r.g.owner, nil); lost != nil {
		return lost
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: volume %s restored to %s; ready again after %s.\n", safeText(replica), safeText(target.Volume.Name), safeText(snapshot), r.g.clock.Since(start).Round(100*time.Millisecond))
	return nil
}

// restoreTarget finds what a restore of replica's volume acts on, and
// refuses, before anything is touched, a replica or volume that is not
// there, and a replica whose plan is not empty (converging it after the
// start would apply changes nobody approved).
func restoreTarget(desired plan.Desired, obs plan.Observed, policy plan.Policy, replica, volume string) (reconciler.Restore, error) {
	var r reconciler.Restore
	for i := range obs.Instances {
		if obs.Instances[i].Name == replica {
			r.Instance = &obs.Instances[i]
		}
	}
	if r.Instance == nil {
		return r, fmt.Errorf("replica %q: owner %q has no instance of that name (a replica is <app>-<slot>; \"berth status\" lists them)", replica, policy.Owner)
	}
	id, err := ownership.ParseInstance(replica, r.Instance.Config)
	if err != nil {
		return r, fmt.Errorf("replica %q: %w", replica, err)
	}
	found := false
	for _, a := range desired.Apps {
		if a.Metadata.Name == id.App {
			r.App, found = a, true
		}
	}
	if !found {
		return r, fmt.Errorf("replica %s: app %s is not in the repository at %s: its spec is needed to start the replica through its health gate", replica, id.App, plan.ShortSHA(desired.Revision))
	}
	var names []string
	for _, sv := range r.App.Spec.System.Volumes {
		names = append(names, sv.Name)
		if sv.Name == volume {
			r.Volume = plan.StepVolume{Name: ownership.VolumeName(id.App, volume, id.Slot), Volume: volume, Path: sv.Path, Exists: true}
		}
	}
	if r.Volume.Name == "" {
		return r, fmt.Errorf("volume %q: app %s has no such volume in system.volumes (it has: %s)", volume, id.App, orDashText(strings.Join(names, ", ")))
	}
	i := slices.IndexFunc(obs.Volumes, func(v plan.Volume) bool { return v.Name == r.Volume.Name })
	if i < 0 {
		return r, fmt.Errorf("volume %s of %s is not there", r.Volume.Name, replica)
	}
	if v := obs.Volumes[i]; !slices.Equal(v.AttachedTo, []string{replica}) {
		return r, fmt.Errorf("volume %s is attached to %s, not to %s alone: apply first", v.Name, orDashText(strings.Join(v.AttachedTo, ", ")), replica)
	}
	r.Volume.Pool = obs.Volumes[i].Pool
	r.Slot, r.Revision = id.Slot, id.Revision
	pl := plan.MakePlan(desired, obs, policy)
	for _, s := range pl.Steps {
		if s.Instance == replica {
			return r, fmt.Errorf("replica %s has changes pending in the repository (%s): apply first, then restore", replica, s.Action)
		}
	}
	if slices.Contains(pl.Held, id.App) {
		return r, fmt.Errorf("app %s is held (invalid spec, or a failed rollout): fix it and apply first", id.App)
	}
	return r, nil
}

// checkSnapshot refuses a snapshot the volume does not have, naming those
// it has.
func checkSnapshot(ctx context.Context, sys *live.System, v plan.StepVolume, snapshot string) error {
	snaps, err := sys.LXD.ListVolumeSnapshots(ctx, lxd.VolumeTarget{Pool: v.Pool, Name: v.Name})
	if err != nil {
		return fmt.Errorf("snapshots of volume %s: %w", v.Name, err)
	}
	var names []string
	for _, s := range snaps {
		if s.Name == snapshot {
			return nil
		}
		names = append(names, s.Name)
	}
	return fmt.Errorf("volume %s has no snapshot %q (it has: %s)", v.Name, snapshot, orDashText(strings.Join(names, ", ")))
}
