//go:build unix

package source

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO named x.yaml hung the reader, and a link to /dev/zero ate memory.
func TestWorktreeSnapshotNeverBlocksOrFollows(t *testing.T) {
	g := newGitRepo(t)
	g.write("apps/web.yaml", "web\n")
	if err := syscall.Mkfifo(filepath.Join(g.dir, "apps/fifo.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"apps/zero.yaml": "/dev/zero", "apps/loop.yaml": "loop.yaml", "linked": "apps"} {
		if err := os.Symlink(target, filepath.Join(g.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		snap Snapshot
		err  error
	}
	done := make(chan result, 1)
	go func() {
		s, err := WorktreeSnapshot(g.dir, "apps")
		done <- result{s, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("WorktreeSnapshot blocks")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	for name, typ := range map[string]fs.FileMode{"fifo.yaml": fs.ModeNamedPipe, "zero.yaml": fs.ModeSymlink, "loop.yaml": fs.ModeSymlink, "web.yaml": 0} {
		fi, err := fs.Stat(res.snap.FS, name)
		if err != nil || fi.Mode().Type() != typ {
			t.Errorf("Stat(%s) = %v, %v; want type %v", name, fi, err, typ)
			continue
		}
		if typ == 0 {
			continue
		}
		if _, err := fs.ReadFile(res.snap.FS, name); !errors.Is(err, ErrSymlink) && !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReadFile(%s) = %v", name, err)
		}
	}
	// Replacing the FIFO by a file changes the revision.
	if err := os.Remove(filepath.Join(g.dir, "apps/fifo.yaml")); err != nil {
		t.Fatal(err)
	}
	g.write("apps/fifo.yaml", "")
	if s, err := WorktreeSnapshot(g.dir, "apps"); err != nil || s.Commit.SHA == res.snap.Commit.SHA {
		t.Errorf("FIFO -> empty file: %v, %v", s.Commit.SHA, err)
	}
	// The spec folder is not reached through a link.
	if _, err := WorktreeSnapshot(g.dir, "linked"); !errors.Is(err, ErrSymlink) {
		t.Errorf("symlinked spec folder: %v", err)
	}
	// A cancelled context stops the walk.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := WorktreeSnapshotContext(ctx, g.dir, "apps"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
