//go:build unix

package spec

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A FIFO named like a spec is never opened: opening it would block until
// a writer came, so validate used to hang forever.
func TestLoadRejectsFIFO(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "ok.yaml"), []byte(app("ok")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, "x.yaml"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan *Result, 1)
	go func() {
		r, err := LoadDir(t.Context(), root, Options{})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	var r *Result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("LoadDir blocked on a FIFO")
	}
	if r == nil {
		return
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"x.yaml: is a named pipe (FIFO); only regular files are read as specs",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"x.yaml"})
	sameLines(t, "apps", appNames(r), []string{"ok"})
}
