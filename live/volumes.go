package live

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// RecreateSnapshotExpiry is how long the snapshot a recreate takes of a
// volume is kept when the volume has no snapshots.expiry of its own.
const RecreateSnapshotExpiry = 7 * 24 * time.Hour

// volumeName matches a name that could be a replica's volume,
// <app>-<volume>-<slot>: such a volume, whoever owns it, is observed so a
// clash is a conflict and never an attach.
var volumeName = regexp.MustCompile(`^[a-z][a-z0-9-]*-[a-z][a-z0-9-]*-[0-9]+$`)

// observeVolumes lists the storage pools, then the custom volumes of
// each (one request per pool), keeping berth's and those named like a
// replica's volume.
func (s *System) observeVolumes(ctx context.Context) ([]plan.Volume, []string, error) {
	pools, err := s.LXD.ListStoragePools(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list storage pools: %w", err)
	}
	slices.Sort(pools)
	var out []plan.Volume
	for _, pool := range pools {
		vols, err := s.LXD.ListVolumes(ctx, pool)
		if err != nil {
			return nil, nil, fmt.Errorf("list volumes of pool %s: %w", pool, err)
		}
		for i := range vols {
			v := &vols[i]
			if v.Config[ownership.KeyOwner] != s.Owner && !volumeName.MatchString(v.Name) {
				continue
			}
			out = append(out, plan.Volume{Name: v.Name, Pool: pool, Location: v.Location, Config: v.Config, AttachedTo: v.AttachedTo()})
		}
	}
	return out, pools, nil
}

// rootPool is the pool of the root disk an instance of app gets: the
// spec's own root disk, else that of the last profile that has one, as
// LXD expands them.
func (s *System) rootPool(ctx context.Context, app spec.App) (string, error) {
	if p := lxd.RootPool(app.Spec.System.Devices); p != "" {
		return p, nil
	}
	profiles := app.Spec.System.Profiles
	for i := len(profiles) - 1; i >= 0; i-- {
		p, _, err := s.LXD.GetProfile(ctx, profiles[i])
		if err != nil {
			return "", fmt.Errorf("profile %q: %w", profiles[i], err)
		}
		if pool := lxd.RootPool(p.Devices); pool != "" {
			return pool, nil
		}
	}
	return "", fmt.Errorf("no root disk in the spec's devices or profiles (%s): set system.volumes[].pool", strings.Join(profiles, ", "))
}

// specVolume is the spec's volume of a step's volume.
func specVolume(app spec.App, v plan.StepVolume) (spec.SystemVolume, error) {
	for _, sv := range app.Spec.System.Volumes {
		if sv.Name == v.Volume {
			return sv, nil
		}
	}
	return spec.SystemVolume{}, fmt.Errorf("volume %s: %q is not in the app's system.volumes", v.Name, v.Volume)
}

// volumeConfig is what berth sets on a slot's volume from the spec.
func (s *System) volumeConfig(app spec.App, sv spec.SystemVolume, slot int) map[string]string {
	cfg := ownership.Volume{Owner: s.Owner, App: app.Metadata.Name, Name: sv.Name, Slot: slot, OnAppDelete: sv.OnAppDelete}.Config()
	cfg["size"] = sv.Size
	if sv.Snapshots != nil {
		if sv.Snapshots.Schedule != "" {
			cfg["snapshots.schedule"] = sv.Snapshots.Schedule
		}
		if sv.Snapshots.Expiry != "" {
			cfg["snapshots.expiry"] = sv.Snapshots.Expiry
		}
	}
	return cfg
}

// EnsureVolumes implements reconciler.Driver.
func (s *System) EnsureVolumes(ctx context.Context, instance string, app spec.App, slot int, vols []plan.StepVolume) ([]plan.StepVolume, error) {
	out := slices.Clone(vols)
	for i := range out {
		v := &out[i]
		sv, err := specVolume(app, *v)
		if err != nil {
			return nil, err
		}
		if v.Pool == "" {
			if v.Pool, err = s.rootPool(ctx, app); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
		if err := s.ensureVolume(ctx, instance, app, sv, slot, *v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *System) ensureVolume(ctx context.Context, instance string, app spec.App, sv spec.SystemVolume, slot int, v plan.StepVolume) error {
	t := lxd.VolumeTarget{Pool: v.Pool, Name: v.Name}
	want := s.volumeConfig(app, sv, slot)
	got, etag, err := s.LXD.GetVolume(ctx, t)
	switch {
	case errors.Is(err, lxd.ErrNotFound) && v.Exists:
		return fmt.Errorf("volume %s (pool %s) is gone since the plan saw it: berth does not put an empty volume where data was expected", v.Name, v.Pool)
	case errors.Is(err, lxd.ErrNotFound):
		if err := s.LXD.CreateVolume(ctx, t, lxd.StorageVolumePut{Config: want, Description: "berth: " + app.Metadata.Name}); err != nil {
			return fmt.Errorf("create volume %s in pool %s: %w", v.Name, v.Pool, err)
		}
		s.Logger.Info("created volume", "volume", v.Name, "pool", v.Pool, "size", sv.Size)
		return nil
	case err != nil:
		return fmt.Errorf("volume %s (pool %s): %w", v.Name, v.Pool, err)
	}
	if err := s.checkOwnVolume(got, instance, app.Metadata.Name, sv.Name, slot); err != nil {
		return err
	}
	patch := map[string]string{}
	for k, val := range want {
		if k != "size" && got.Config[k] != val {
			patch[k] = val
		}
	}
	for _, k := range []string{"snapshots.schedule", "snapshots.expiry"} {
		if _, ok := want[k]; !ok && got.Config[k] != "" {
			patch[k] = ""
		}
	}
	// Grow only: the plan refuses a shrink, and a volume grown by hand
	// stays as it is.
	if have := got.Config["size"]; have == "" || spec.VolumeBytes(sv.Size) > spec.VolumeBytes(have) {
		patch["size"] = sv.Size
	}
	if len(patch) == 0 {
		return nil
	}
	if err := s.LXD.PatchVolume(ctx, t, patch, etag); err != nil {
		return fmt.Errorf("update volume %s: %w", v.Name, err)
	}
	if patch["size"] != "" {
		s.Logger.Info("grew volume", "volume", v.Name, "from", got.Config["size"], "to", sv.Size)
	}
	return nil
}

// checkOwnVolume refuses a volume that is not the slot's, or that another
// instance has attached.
func (s *System) checkOwnVolume(v *lxd.StorageVolume, instance, app, volume string, slot int) error {
	if owner := v.Config[ownership.KeyOwner]; owner != s.Owner {
		return fmt.Errorf("volume %s (pool %s) is not berth's (owner %q): not touching it", v.Name, v.Pool, owner)
	}
	if got, err := ownership.ParseVolume(v.Name, v.Config); err != nil || got.App != app || got.Name != volume || got.Slot != slot {
		return fmt.Errorf("volume %s (pool %s): its keys do not name %s's volume %s of slot %d", v.Name, v.Pool, app, volume, slot)
	}
	for _, other := range v.AttachedTo() {
		if other != instance {
			return fmt.Errorf("volume %s is attached to %s: berth attaches a volume to one instance only", v.Name, other)
		}
	}
	return nil
}

// SnapshotVolumes implements reconciler.Driver.
func (s *System) SnapshotVolumes(ctx context.Context, vols []plan.StepVolume, snapshot string) error {
	for _, v := range vols {
		t := lxd.VolumeTarget{Pool: v.Pool, Name: v.Name}
		got, _, err := s.LXD.GetVolume(ctx, t)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if got.Config[ownership.KeyOwner] != s.Owner {
			return fmt.Errorf("volume %s is not berth's: not snapshotting it", v.Name)
		}
		// LXD applies the volume's own snapshots.expiry to a snapshot
		// taken without one.
		var expires time.Time
		if got.Config["snapshots.expiry"] == "" {
			expires = clock.Or(s.Clock).Now().Add(RecreateSnapshotExpiry)
		}
		err = s.LXD.CreateVolumeSnapshot(ctx, t, snapshot, expires)
		if errors.Is(err, lxd.ErrConflict) {
			// Taken by a run that was interrupted after it: the data
			// has not changed since, the instance being stopped.
			continue
		}
		if err != nil {
			return fmt.Errorf("snapshot %s/%s: %w", v.Name, snapshot, err)
		}
		s.Logger.Info("snapshotted volume", "volume", v.Name, "snapshot", snapshot)
	}
	return nil
}

// DeleteVolumes implements reconciler.Driver.
func (s *System) DeleteVolumes(ctx context.Context, vols []plan.StepVolume) error {
	for _, v := range vols {
		if !v.Delete {
			continue
		}
		t := lxd.VolumeTarget{Pool: v.Pool, Name: v.Name}
		got, _, err := s.LXD.GetVolume(ctx, t)
		if errors.Is(err, lxd.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", v.Name, err)
		}
		if got.Config[ownership.KeyOwner] != s.Owner {
			return fmt.Errorf("volume %s is not berth's: not deleting it", v.Name)
		}
		if at := got.AttachedTo(); len(at) > 0 {
			return fmt.Errorf("volume %s is still attached to %s: not deleting it", v.Name, strings.Join(at, ", "))
		}
		if err := s.LXD.DeleteVolume(ctx, t); err != nil {
			return fmt.Errorf("delete volume %s: %w", v.Name, err)
		}
		s.Logger.Info("deleted volume", "volume", v.Name, "pool", v.Pool)
	}
	return nil
}

// detachVolumes removes berth's volume devices from a stopped instance
// that is kept as a backup: the volumes go on with the replica, never
// on two instances.
func (s *System) detachVolumes(ctx context.Context, name string) error {
	inst, etag, err := s.LXD.GetInstance(ctx, name)
	if err != nil {
		return err
	}
	put := inst.Writable()
	n := len(put.Devices)
	for dev := range put.Devices {
		if strings.HasPrefix(dev, spec.VolumeDevicePrefix) {
			delete(put.Devices, dev)
		}
	}
	if len(put.Devices) == n {
		return nil
	}
	return s.LXD.UpdateInstance(ctx, name, put, etag)
}

// RestoreVolume implements reconciler.VolumeRestorer.
func (s *System) RestoreVolume(ctx context.Context, v plan.StepVolume, snapshot string) error {
	t := lxd.VolumeTarget{Pool: v.Pool, Name: v.Name}
	got, _, err := s.LXD.GetVolume(ctx, t)
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	if got.Config[ownership.KeyOwner] != s.Owner {
		return fmt.Errorf("volume %s is not berth's: not restoring it", v.Name)
	}
	if err := s.LXD.RestoreVolumeSnapshot(ctx, t, snapshot); err != nil {
		return err
	}
	s.Logger.Info("restored volume", "volume", v.Name, "snapshot", snapshot)
	return nil
}
