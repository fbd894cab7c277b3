package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// TestFirstProvisionOfManyFreshReplicas: 20 replicas created and
// provisioned at once, right after they start, as a scale-up does: LXD's
// "Failed to retrieve PID of executing child process" for an instance
// that has only just started made such a first provision fail (issue
// 18). Three rounds, each with 0 failures; each replica's file and the
// script's result are read back from the instance.
func TestFirstProvisionOfManyFreshReplicas(t *testing.T) {
	c := realLXD(t)
	const owner, n = "berth-it-first", 20
	sys := New(c, owner, engine.Options{})
	sys.StopTimeout = time.Second
	defer sys.Close()
	app := systemOnlyApp("berth-it-first")
	p := &spec.Provision{
		Files: []spec.ProvisionFile{{Source: "motd", Path: "/etc/berth-it/motd", Content: []byte("provisioned\n")}},
		Run:   []string{"sh", "-c", "cp /etc/berth-it/motd /etc/berth-it/done"},
	}
	for round := 1; round <= 3; round++ {
		names := make([]string, n)
		for i := range names {
			names[i] = ownership.InstanceName(app.Metadata.Name, i)
			_ = c.DeleteInstance(context.Background(), names[i]) // a killed run's
		}
		t.Cleanup(func() { deleteAll(c, names) })
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, name := range names {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				cfg := plan.ManagedConfig(app, owner, "r1", i)
				cfg[ownership.KeySystemOnly] = "true"
				if err := sys.CreateInstance(ctx, name, app, cfg, ""); err != nil {
					errs[i] = err
					return
				}
				errs[i] = sys.Provision(ctx, name, p)
			}()
		}
		wg.Wait()
		failed := 0
		for i, err := range errs {
			if err != nil {
				failed++
				t.Errorf("round %d: %s: %v", round, names[i], err)
			}
		}
		for _, name := range names {
			if got := inInstance(t, c, name, "cat", "/etc/berth-it/done"); got != "provisioned\n" {
				t.Errorf("round %d: %s: the script's result is %q", round, name, got)
			}
		}
		t.Logf("round %d: %d replicas created and provisioned in %s, %d failed", round, n, time.Since(start).Round(time.Millisecond), failed)
		deleteAll(c, names)
	}
}

// deleteAll force-stops and deletes the instances, together. A delete
// that finds the instance still busy with its stop is tried again.
func deleteAll(c *lxd.Client, names []string) {
	var wg sync.WaitGroup
	for _, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_ = c.SetInstanceState(ctx, name, lxd.InstanceStatePut{Action: "stop", Force: true, Timeout: -1})
			for {
				err := c.DeleteInstance(ctx, name)
				if err == nil || errors.Is(err, lxd.ErrNotFound) {
					return
				}
				if ctx.Err() != nil {
					fmt.Println("cleanup:", name, err)
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}
