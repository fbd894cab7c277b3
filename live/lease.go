package live

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/berth-gitops/berth/lxd"
)

// Lease keeps one reconciler per owner on an LXD server. It lives in LXD
// itself, so it needs no other coordination service: the server config key
// user.berth.lease.<owner> holds "<holder> <expiry unix seconds>", and every
// change goes through If-Match, so two daemons racing for it cannot both
// win. A holder renews it on each run; when it stops renewing (killed, host
// gone) another takes over once the expiry passes.
type Lease struct {
	LXD    *lxd.Client
	Owner  string
	Holder string // unique per daemon: host name and pid
	TTL    time.Duration
	Now    func() time.Time
}

// LeaseKey is the server config key of owner's lease.
func LeaseKey(owner string) string { return "user.berth.lease." + owner }

func (l *Lease) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// parseLease reads "<holder> <expiry>"; a garbled value counts as expired.
func parseLease(v string) (holder string, expiry time.Time) {
	h, exp, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return "", time.Time{}
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return "", time.Time{}
	}
	return h, time.Unix(sec, 0)
}

// Acquire takes the lease when it is free, expired or already ours, and
// extends it by TTL. held=false names the current holder.
func (l *Lease) Acquire(ctx context.Context) (bool, string, error) {
	// The ETag covers the whole server config, so another owner renewing
	// its own lease makes ours fail with 412: read again and retry.
	for try := 0; ; try++ {
		held, holder, err := l.acquire(ctx)
		if !errors.Is(err, lxd.ErrPreconditionFailed) || try == 4 {
			if errors.Is(err, lxd.ErrPreconditionFailed) {
				return false, "unknown (server config keeps changing)", nil
			}
			return held, holder, err
		}
	}
}

func (l *Lease) acquire(ctx context.Context) (bool, string, error) {
	srv, etag, err := l.LXD.GetServer(ctx)
	if err != nil {
		return false, "", fmt.Errorf("read lease: %w", err)
	}
	cur, _ := srv.Config[LeaseKey(l.Owner)].(string)
	holder, expiry := parseLease(cur)
	now := l.now()
	if holder != "" && holder != l.Holder && now.Before(expiry) {
		return false, fmt.Sprintf("%s (until %s)", holder, expiry.UTC().Format(time.RFC3339)), nil
	}
	value := fmt.Sprintf("%s %d", l.Holder, now.Add(l.TTL).Unix())
	err = l.LXD.PatchServerConfig(ctx, map[string]any{LeaseKey(l.Owner): value}, etag)
	if errors.Is(err, lxd.ErrPreconditionFailed) {
		return false, "", err
	}
	if err != nil {
		return false, "", fmt.Errorf("take lease: %w", err)
	}
	return true, "", nil
}

// Release gives the lease up if this daemon holds it.
func (l *Lease) Release(ctx context.Context) error {
	srv, etag, err := l.LXD.GetServer(ctx)
	if err != nil {
		return err
	}
	cur, _ := srv.Config[LeaseKey(l.Owner)].(string)
	if holder, _ := parseLease(cur); holder != l.Holder {
		return nil
	}
	return l.LXD.PatchServerConfig(ctx, map[string]any{LeaseKey(l.Owner): ""}, etag)
}

// LeaseHolder tells who holds owner's lease now ("" when free or expired):
// `berth apply` refuses to act while a daemon does.
func LeaseHolder(ctx context.Context, c *lxd.Client, owner string, now time.Time) (string, error) {
	srv, _, err := c.GetServer(ctx)
	if err != nil {
		return "", err
	}
	cur, _ := srv.Config[LeaseKey(owner)].(string)
	holder, expiry := parseLease(cur)
	if holder == "" || !now.Before(expiry) {
		return "", nil
	}
	return fmt.Sprintf("%s (until %s)", holder, expiry.UTC().Format(time.RFC3339)), nil
}
