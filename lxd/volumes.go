package lxd

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"time"
)

// StorageVolumePut is the writable part of a custom storage volume
// (shared/api/storage_pool_volume.go).
type StorageVolumePut struct {
	Config      map[string]string `json:"config"`
	Description string            `json:"description"`
}

// StorageVolume is a custom storage volume. Config holds LXD's keys
// ("size", "snapshots.schedule", "snapshots.expiry") and the user.* keys
// of whoever made it. UsedBy lists the API paths of the instances (and
// profiles) it is attached to.
type StorageVolume struct {
	StorageVolumePut
	Name        string   `json:"name"`
	Type        string   `json:"type"`         // "custom" for these
	ContentType string   `json:"content_type"` // "filesystem" or "block"
	UsedBy      []string `json:"used_by"`
	Location    string   `json:"location"` // cluster member of a local pool; "none" off a cluster
	Project     string   `json:"project"`
	// Pool is the pool it was listed or fetched from; LXD does not send it.
	Pool string `json:"-"`
}

// AttachedTo returns the names of the instances the volume is attached to,
// from UsedBy ("/1.0/instances/web-0?project=p"), sorted as LXD lists them.
func (v *StorageVolume) AttachedTo() []string {
	var out []string
	for _, u := range v.UsedBy {
		p, _, _ := strings.Cut(u, "?")
		rest, ok := strings.CutPrefix(p, "/1.0/instances/")
		if !ok || rest == "" || strings.Contains(rest, "/") {
			continue
		}
		if name, err := url.PathUnescape(rest); err == nil {
			out = append(out, name)
		}
	}
	return out
}

// StorageVolumeSnapshot is a snapshot of a custom volume. Name is the
// snapshot's own name, without the "volume/" prefix LXD lists it with.
type StorageVolumeSnapshot struct {
	Name        string            `json:"name"`
	Config      map[string]string `json:"config"`
	Description string            `json:"description"`
	CreatedAt   time.Time         `json:"created_at"`
	ExpiresAt   time.Time         `json:"expires_at"`
}

// StorageVolumeUsage is what a volume holds (GET .../state): Used bytes
// and, when the driver knows it, Total (its quota).
type StorageVolumeUsage struct {
	Used  uint64 `json:"used"`
	Total int64  `json:"total"`
}

// VolumeTarget names a custom volume: its pool and name, and on a cluster
// with a local pool the member that holds it ("" lets LXD find it, which
// it can only when the name is unique in the pool).
type VolumeTarget struct {
	Pool, Name, Member string
}

func (t VolumeTarget) path() string {
	return "/1.0/storage-pools/" + pathEscape(t.Pool) + "/volumes/custom/" + pathEscape(t.Name)
}

func (t VolumeTarget) query() url.Values {
	if t.Member == "" {
		return nil
	}
	return url.Values{"target": {t.Member}}
}

func (t VolumeTarget) check() error {
	if t.Pool == "" || t.Name == "" {
		return errEmptyName
	}
	return nil
}

// ListVolumes lists the custom volumes of pool in the project with their
// config in one request (recursion=1). LXD 5.0 has no filter on config
// keys here, so callers pick their own by owner key.
func (c *Client) ListVolumes(ctx context.Context, pool string) ([]StorageVolume, error) {
	if pool == "" {
		return nil, errEmptyName
	}
	var all []StorageVolume
	path := "/1.0/storage-pools/" + pathEscape(pool) + "/volumes/custom"
	if _, err := c.query(ctx, request{method: "GET", path: path, query: url.Values{"recursion": {"1"}}, project: true}, &all); err != nil {
		return nil, err
	}
	out := all[:0]
	for _, v := range all {
		// Older servers ignore the type in the path and list every
		// volume, and LXD 5.0 lists snapshots too, as "volume/snapshot".
		if (v.Type == "" || v.Type == "custom") && !strings.Contains(v.Name, "/") {
			v.Pool = pool
			out = append(out, v)
		}
	}
	if out == nil {
		out = []StorageVolume{}
	}
	return out, nil
}

// GetVolume returns the custom volume and its ETag. A missing volume
// matches ErrNotFound.
func (c *Client) GetVolume(ctx context.Context, t VolumeTarget) (*StorageVolume, string, error) {
	if err := t.check(); err != nil {
		return nil, "", err
	}
	var v StorageVolume
	etag, err := c.query(ctx, request{method: "GET", path: t.path(), query: t.query(), project: true}, &v)
	if err != nil {
		return nil, "", err
	}
	v.Pool = t.Pool
	return &v, etag, nil
}

// CreateVolume creates an empty filesystem custom volume with config
// (size, snapshots.*, user.* keys). An existing name matches ErrConflict;
// a pool that does not exist matches ErrNotFound.
func (c *Client) CreateVolume(ctx context.Context, t VolumeTarget, put StorageVolumePut) error {
	if err := t.check(); err != nil {
		return err
	}
	body := struct {
		StorageVolumePut
		Name        string `json:"name"`
		Type        string `json:"type"`
		ContentType string `json:"content_type"`
	}{put, t.Name, "custom", "filesystem"}
	path := "/1.0/storage-pools/" + pathEscape(t.Pool) + "/volumes/custom"
	_, err := c.run(ctx, request{method: "POST", path: path, query: t.query(), project: true, body: body})
	return err
}

// PatchVolume merges config into the volume's (a key set to "" is
// deleted) with If-Match: etag ("" = no check). Setting "size" resizes it
// in place, attached or not.
func (c *Client) PatchVolume(ctx context.Context, t VolumeTarget, config map[string]string, etag string) error {
	if err := t.check(); err != nil {
		return err
	}
	body := map[string]any{"config": config}
	_, err := c.run(ctx, request{method: "PATCH", path: t.path(), query: t.query(), project: true, body: body, etag: etag})
	return err
}

// ResizeVolume sets the volume's size ("10GiB"): LXD grows the quota of a
// filesystem volume in place, even while an instance uses it.
func (c *Client) ResizeVolume(ctx context.Context, t VolumeTarget, size string) error {
	if size == "" {
		return errors.New("lxd: resize: empty size")
	}
	return c.PatchVolume(ctx, t, map[string]string{"size": size}, "")
}

// DeleteVolume deletes the volume and its snapshots. LXD refuses one that
// is attached to an instance.
func (c *Client) DeleteVolume(ctx context.Context, t VolumeTarget) error {
	if err := t.check(); err != nil {
		return err
	}
	_, err := c.run(ctx, request{method: "DELETE", path: t.path(), query: t.query(), project: true})
	return err
}

// VolumeUsage returns how much of the volume is used (GET .../state).
func (c *Client) VolumeUsage(ctx context.Context, t VolumeTarget) (*StorageVolumeUsage, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	var st struct {
		Usage *StorageVolumeUsage `json:"usage"`
	}
	if _, err := c.query(ctx, request{method: "GET", path: t.path() + "/state", query: t.query(), project: true}, &st); err != nil {
		return nil, err
	}
	if st.Usage == nil {
		return &StorageVolumeUsage{}, nil
	}
	return st.Usage, nil
}

// CreateVolumeSnapshot snapshots the volume and waits. A zero expires
// keeps it until deleted (or until the volume's snapshots.expiry, which
// LXD applies to snapshots taken without one).
func (c *Client) CreateVolumeSnapshot(ctx context.Context, t VolumeTarget, snap string, expires time.Time) error {
	if err := t.check(); err != nil {
		return err
	}
	if snap == "" {
		return errEmptyName
	}
	body := map[string]any{"name": snap}
	if !expires.IsZero() {
		body["expires_at"] = expires.UTC()
	}
	_, err := c.run(ctx, request{method: "POST", path: t.path() + "/snapshots", query: t.query(), project: true, body: body})
	return err
}

// ListVolumeSnapshots lists the volume's snapshots (recursion=1), names
// without the volume prefix.
func (c *Client) ListVolumeSnapshots(ctx context.Context, t VolumeTarget) ([]StorageVolumeSnapshot, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	q := url.Values{"recursion": {"1"}}
	if t.Member != "" {
		q.Set("target", t.Member)
	}
	var out []StorageVolumeSnapshot
	if _, err := c.query(ctx, request{method: "GET", path: t.path() + "/snapshots", query: q, project: true}, &out); err != nil {
		return nil, err
	}
	for i := range out {
		if _, snap, ok := strings.Cut(out[i].Name, "/"); ok {
			out[i].Name = snap
		}
	}
	if out == nil {
		out = []StorageVolumeSnapshot{}
	}
	return out, nil
}

// RestoreVolumeSnapshot rolls the volume back to the snapshot: a PUT of
// the volume with {"restore": snap}. LXD refuses it while an instance
// that uses the volume runs; stop it first.
func (c *Client) RestoreVolumeSnapshot(ctx context.Context, t VolumeTarget, snap string) error {
	if err := t.check(); err != nil {
		return err
	}
	if snap == "" {
		return errEmptyName
	}
	v, etag, err := c.GetVolume(ctx, t)
	if err != nil {
		return err
	}
	// A PUT replaces the config: send the current one with the restore so
	// nothing else changes.
	body := map[string]any{"config": v.Config, "description": v.Description, "restore": snap}
	_, err = c.run(ctx, request{method: "PUT", path: t.path(), query: t.query(), project: true, body: body, etag: etag})
	return err
}

// DeleteVolumeSnapshot deletes one snapshot of the volume and waits.
func (c *Client) DeleteVolumeSnapshot(ctx context.Context, t VolumeTarget, snap string) error {
	if err := t.check(); err != nil {
		return err
	}
	if snap == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: t.path() + "/snapshots/" + pathEscape(snap), query: t.query(), project: true})
	return err
}

// RootPool returns the storage pool of the instance's root disk, from its
// expanded devices (a profile's root disk counts): the disk whose path is
// "/". It is "" when the instance has none (LXD would not start it).
func (i *Instance) RootPool() string {
	return RootPool(i.ExpandedDevices)
}

// RootPool returns the pool of the root disk among devices ("" if none),
// for an instance's expanded devices or a profile's.
func RootPool(devices map[string]map[string]string) string {
	for _, d := range devices {
		if d["type"] == "disk" && d["path"] == "/" {
			return d["pool"]
		}
	}
	return ""
}

// ListStoragePools returns the names of the server's storage pools.
func (c *Client) ListStoragePools(ctx context.Context) ([]string, error) {
	var urls []string
	if _, err := c.query(ctx, request{method: "GET", path: "/1.0/storage-pools"}, &urls); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		p, _, _ := strings.Cut(u, "?")
		if name, err := url.PathUnescape(p[strings.LastIndexByte(p, '/')+1:]); err == nil && name != "" {
			out = append(out, name)
		}
	}
	return out, nil
}
