package live

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/spec"
)

// heapPeak samples the heap in use until stop is called, which returns
// the highest figure seen.
func heapPeak() (stop func() uint64) {
	var (
		mu   sync.Mutex
		peak uint64
		wg   sync.WaitGroup
	)
	done := make(chan struct{})
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		mu.Lock()
		peak = max(peak, m.HeapInuse)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		sample()
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// TestProvisionOutputIsBounded: a provision that prints 300 MB and then
// fails keeps only the tail of its output, within ProvisionTailLines and
// ProvisionTailBytes, ending with its last line; while it streams, the
// heap of the process running it (this test's) grows by far less than
// the output: berth never holds it whole.
func TestProvisionOutputIsBounded(t *testing.T) {
	c := realLXD(t)
	const owner = "berth-it-provbig"
	sys := New(c, owner, engine.Options{})
	defer sys.Close()
	name := createReplica(t, sys, systemOnlyApp("berth-it-provbig"))

	const size = 300_000_000
	script := "yes berth-provision-output | head -c 300000000; printf '\\nthe last line\\n'; exit 3"
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := heapPeak()
	start := time.Now()
	err := sys.Provision(context.Background(), name, &spec.Provision{Run: []string{"/bin/sh", "-c", script}, Timeout: spec.Duration(5 * time.Minute)})
	took := time.Since(start)
	peak := stop()
	grew := int64(peak) - int64(before.HeapInuse)
	t.Logf("%d MB of output in %s; heap in use %d MB before, at most %d MB during (grew %d MB)",
		size/1_000_000, took.Round(time.Millisecond), before.HeapInuse>>20, peak>>20, grew>>20)

	var pe *ProvisionError
	if !errors.As(err, &pe) || !strings.Contains(pe.Reason, "exited with code 3") {
		t.Fatalf("a provision that printed %d bytes and exited 3: %v", size, err)
	}
	lines := strings.Split(pe.Output, "\n")
	if len(pe.Output) > ProvisionTailBytes || len(lines) > ProvisionTailLines || lines[len(lines)-1] != "the last line" {
		t.Errorf("kept %d bytes in %d lines (at most %d in %d), ending %q, want \"the last line\"",
			len(pe.Output), len(lines), ProvisionTailBytes, ProvisionTailLines, lines[len(lines)-1])
	}
	// head cut the last line of yes short.
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix("berth-provision-output", l) {
			t.Errorf("a line of the tail: %q", l)
			break
		}
	}
	if len(err.Error()) > ProvisionTailBytes+1024 {
		t.Errorf("the error is %d bytes long", len(err.Error()))
	}
	// Generous: the output is 300 MB; a bound that would hold it, or a
	// sizeable part of it, fails.
	if grew > 64<<20 {
		t.Errorf("the heap grew by %d MB while the provision printed %d MB", grew>>20, size/1_000_000)
	}
}
