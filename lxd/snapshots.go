package lxd

import (
	"context"
	"net/url"
	"time"
)

// Snapshot is an instance snapshot (shared/api/instance_snapshot.go). Name is
// the snapshot's own name, without the "instance/" prefix.
type Snapshot struct {
	Name         string                       `json:"name"`
	Architecture string                       `json:"architecture"`
	Config       map[string]string            `json:"config"`
	Devices      map[string]map[string]string `json:"devices"`
	Profiles     []string                     `json:"profiles"`
	Ephemeral    bool                         `json:"ephemeral"`
	Stateful     bool                         `json:"stateful"`
	Size         int64                        `json:"size"`
	CreatedAt    time.Time                    `json:"created_at"`
	ExpiresAt    time.Time                    `json:"expires_at"`
}

func snapshotPath(inst, snap string) string {
	return instancePath(inst) + "/snapshots/" + pathEscape(snap)
}

// CreateSnapshot snapshots the instance and waits. stateful also saves the
// running state (needs CRIU; rarely available).
func (c *Client) CreateSnapshot(ctx context.Context, inst, snap string, stateful bool) error {
	if inst == "" || snap == "" {
		return errEmptyName
	}
	body := map[string]any{"name": snap, "stateful": stateful}
	_, err := c.run(ctx, request{method: "POST", path: instancePath(inst) + "/snapshots", project: true, body: body})
	return err
}

// ListSnapshots lists the instance's snapshots (recursion=1).
func (c *Client) ListSnapshots(ctx context.Context, inst string) ([]Snapshot, error) {
	if inst == "" {
		return nil, errEmptyName
	}
	var out []Snapshot
	_, err := c.query(ctx, request{method: "GET", path: instancePath(inst) + "/snapshots", query: url.Values{"recursion": {"1"}}, project: true}, &out)
	if out == nil && err == nil {
		out = []Snapshot{}
	}
	return out, err
}

// GetSnapshot returns one snapshot.
func (c *Client) GetSnapshot(ctx context.Context, inst, snap string) (*Snapshot, error) {
	if inst == "" || snap == "" {
		return nil, errEmptyName
	}
	var s Snapshot
	if _, err := c.query(ctx, request{method: "GET", path: snapshotPath(inst, snap), project: true}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// RestoreSnapshot restores the instance from the snapshot: a PUT of the
// instance with {"restore": snap}, which LXD treats as a restore and nothing
// else (lxd/instance_put.go).
func (c *Client) RestoreSnapshot(ctx context.Context, inst, snap string) error {
	if inst == "" || snap == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "PUT", path: instancePath(inst), project: true, body: map[string]any{"restore": snap}})
	return err
}

// DeleteSnapshot deletes the snapshot and waits.
func (c *Client) DeleteSnapshot(ctx context.Context, inst, snap string) error {
	if inst == "" || snap == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: snapshotPath(inst, snap), project: true})
	return err
}
