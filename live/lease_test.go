package live

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/lxd"
)

func TestParseLease(t *testing.T) {
	h, exp := parseLease("host-a:12 1700000000")
	if h != "host-a:12" || exp.Unix() != 1700000000 {
		t.Errorf("parse = %q %v", h, exp)
	}
	for _, bad := range []string{"", "nospace", "h notanumber"} {
		if h, _ := parseLease(bad); h != "" {
			t.Errorf("parseLease(%q) holder = %q", bad, h)
		}
	}
}

// TestLeaseOnRealLXD runs two holders against the real server config.
func TestLeaseOnRealLXD(t *testing.T) {
	ctx := context.Background()
	c := realLXD(t)
	owner := "lease-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	now := time.Unix(2_000_000_000, 0)
	clock := func() time.Time { return now }
	a := &Lease{LXD: c, Owner: owner, Holder: "a", TTL: 30 * time.Second, Now: clock}
	b := &Lease{LXD: c, Owner: owner, Holder: "b", TTL: 30 * time.Second, Now: clock}
	t.Cleanup(func() { _ = c.PatchServerConfig(context.Background(), map[string]any{LeaseKey(owner): ""}, "") })

	if held, _, err := a.Acquire(ctx); !held || err != nil {
		t.Fatalf("a: held %v err %v", held, err)
	}
	if held, holder, err := b.Acquire(ctx); held || err != nil || !strings.HasPrefix(holder, "a ") {
		t.Fatalf("b while a holds: held %v holder %q err %v", held, holder, err)
	}
	if held, _, _ := a.Acquire(ctx); !held {
		t.Fatal("a cannot renew")
	}
	// a stops renewing: b takes over after the expiry.
	now = now.Add(31 * time.Second)
	if held, _, err := b.Acquire(ctx); !held || err != nil {
		t.Fatalf("b after expiry: held %v err %v", held, err)
	}
	if held, _, _ := a.Acquire(ctx); held {
		t.Fatal("a took the lease back from b")
	}
	// Release by a non-holder changes nothing; by the holder frees it.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := a.Acquire(ctx); held {
		t.Fatal("a's release freed b's lease")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := a.Acquire(ctx); !held {
		t.Fatal("lease not free after b released it")
	}
}

// realLXD connects to the local LXD, skips with -short, and fails (CI,
// BERTH_REQUIRE_LXD) or skips loudly when there is none.
func realLXD(t *testing.T) *lxd.Client {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test")
	}
	c, err := lxd.Connect(context.Background(), lxd.Config{})
	if err != nil {
		if os.Getenv("CI") != "" || os.Getenv("BERTH_REQUIRE_LXD") != "" {
			t.Fatalf("LXD required: %v", err)
		}
		t.Skipf("!!! SKIPPING: no LXD: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}
