package reconciler

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// VolumeRestorer is a Driver that can roll a volume back to one of its
// snapshots. It is apart from Driver because only `berth volume restore`
// needs it, never a plan.
type VolumeRestorer interface {
	// RestoreVolume rolls the volume back to snapshot. The instance that
	// uses it must be stopped.
	RestoreVolume(ctx context.Context, v plan.StepVolume, snapshot string) error
}

// Restore is one volume of a replica rolled back to a snapshot.
type Restore struct {
	// Instance is the replica as observed; App is its app's spec.
	Instance *plan.Instance
	App      spec.App
	Slot     int
	// Revision is what the replica's container is labelled with when it
	// is converged after the start.
	Revision string
	Volume   plan.StepVolume
	Snapshot string
}

// RestoreVolume drains the replica and stops it, so nothing writes while
// the volume rolls back, restores the snapshot, then starts it again and
// waits through the health gate, as a Start step does. The replica is
// started again even when the restore fails: a stopped replica is worse
// than one on its old data.
func (e *Executor) RestoreVolume(ctx context.Context, r Restore) error {
	rv, ok := e.Driver.(VolumeRestorer)
	if !ok {
		return errors.New("this driver cannot restore volumes")
	}
	name := r.Instance.Name
	// The same drain as a disruptive step's, delay included.
	x := &execution{e: e, clk: clock.Or(e.Clock), apps: map[string]*spec.App{r.App.Metadata.Name: &r.App},
		insts: map[string]*plan.Instance{name: r.Instance}}
	undrain, err := x.drain(ctx, plan.Step{Instance: name, App: r.App.Metadata.Name, Action: plan.Restart})
	// Back in discovery once it is observed ready: the restart may have
	// given it another address.
	defer undrain(false)
	if err != nil {
		return err
	}
	if err := e.Driver.StopInstance(ctx, name); err != nil {
		return fmt.Errorf("stopping %s before the restore (nothing restored): %w", name, err)
	}
	restored := rv.RestoreVolume(ctx, r.Volume, r.Snapshot)
	if restored != nil {
		restored = fmt.Errorf("restore %s to %s (the volume keeps its data; %s is started again): %w", r.Volume.Name, r.Snapshot, name, restored)
	}
	if err := e.Driver.StartInstance(ctx, name); err != nil {
		return errors.Join(restored, fmt.Errorf("starting %s again: %w", name, err))
	}
	if err := e.converge(ctx, name, r.App, r.Slot, r.Revision); err != nil {
		return errors.Join(restored, fmt.Errorf("%s after the restart: %w", name, err))
	}
	return restored
}
