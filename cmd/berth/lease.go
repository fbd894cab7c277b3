package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
)

// Bounds of apply's lease flags.
const (
	minLeaseTTL  = 3 * time.Second
	maxLeaseTTL  = time.Hour
	maxLeaseWait = 24 * time.Hour
)

// leaseFlags are apply's: the owner's lease is what keeps two writers
// (applies, daemons) from converging the same instances at once.
type leaseFlags struct {
	ttl, wait time.Duration
}

func (f *leaseFlags) check() error {
	if f.ttl < minLeaseTTL || f.ttl > maxLeaseTTL {
		return fmt.Errorf("--lease-ttl %v: want %v to %v", f.ttl, minLeaseTTL, maxLeaseTTL)
	}
	if f.wait < 0 || f.wait > maxLeaseWait {
		return fmt.Errorf("--wait-lease %v: want 0 (refuse at once) to %v", f.wait, maxLeaseWait)
	}
	return nil
}

// holdLease takes owner's lease for an apply and keeps it renewed (every
// TTL/3) until release. When another apply or a daemon holds it, it
// refuses at once naming the holder and its expiry, or with --wait-lease
// waits for it. The lease's times are on clk.
func holdLease(ctx context.Context, c *lxd.Client, owner string, f leaseFlags, clk clock.Clock, errOut io.Writer) (*live.Held, error) {
	host, _ := os.Hostname()
	l := &live.Lease{LXD: c, Owner: owner, Holder: live.HolderID("apply", host, os.Getpid()), TTL: f.ttl, Clock: clk}
	said := ""
	h, err := l.Hold(ctx, f.wait, func(st reconciler.LeaseState) {
		if st.Holder != said {
			fmt.Fprintf(errOut, "Waiting up to %s for the lease of owner %q: held by %s, %s.\n", f.wait, owner, st.String(), holderKind(st.Holder))
			said = st.Holder
		}
	})
	var busy *live.BusyError
	switch {
	case errors.As(err, &busy) && f.wait > 0:
		return nil, fmt.Errorf("%s, %s; gave up after --wait-lease %s", busy.Error(), holderKind(busy.State.Holder), f.wait)
	case errors.As(err, &busy) && strings.HasPrefix(busy.State.Holder, "berth-run@"):
		return nil, fmt.Errorf("%s, %s: push to Git and let it converge, or stop it first (--wait-lease DURATION waits for the lease)", busy.Error(), holderKind(busy.State.Holder))
	case errors.As(err, &busy):
		return nil, fmt.Errorf("%s, %s: try again when it is done, or wait for it with --wait-lease DURATION", busy.Error(), holderKind(busy.State.Holder))
	case err != nil:
		return nil, fmt.Errorf("taking the lease of owner %q: %w", owner, err)
	}
	return h, nil
}

// holderKind says in words what a lease holder is.
func holderKind(holder string) string {
	switch {
	case strings.HasPrefix(holder, "berth-run@"):
		return "a berth run daemon converging this owner"
	case strings.HasPrefix(holder, "berth-apply@"):
		return "another berth apply converging this owner"
	}
	return "another berth process converging this owner"
}

// releaseLease gives the lease up at the end of an apply, also after
// Ctrl-C or an error, with a context of its own (timed on clk).
func releaseLease(ctx context.Context, h *live.Held, clk clock.Clock, log *slog.Logger) {
	rctx, cancel := clock.WithTimeout(context.WithoutCancel(ctx), clk, 10*time.Second)
	defer cancel()
	if err := h.Release(rctx); err != nil {
		log.Warn("releasing the lease failed; it expires by itself", "err", err, "expires", h.Expiry())
	}
}

// leaseLost turns an error of work done under a lost lease into one that
// says so; other errors pass through.
func leaseLost(h *live.Held, owner string, err error) error {
	lost := h.Lost()
	if lost == nil {
		return err
	}
	return fmt.Errorf("owner %q: %v during the apply; no step started after that; run apply again", owner, lost)
}
