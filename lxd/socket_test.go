package lxd

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// With no local socket, Connect fails at once and names every path it
// looked at: the Debian package's as well as the snap's (issue 9 #23).
func TestConnectNamesEverySocketTried(t *testing.T) {
	dir := t.TempDir()
	debian, snap := filepath.Join(dir, "lib", "unix.socket"), filepath.Join(dir, "snap", "unix.socket")
	old := systemSockets
	systemSockets = []string{debian, snap}
	t.Cleanup(func() { systemSockets = old })
	t.Setenv("LXD_SOCKET", "")
	t.Setenv("LXD_DIR", "")

	start := time.Now()
	_, err := Connect(context.Background(), Config{})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if want := "LXD not reachable at " + debian + " or " + snap; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s, want a fast failure", took)
	}

	// $LXD_DIR pointing at an empty directory: its socket is named.
	empty := t.TempDir()
	t.Setenv("LXD_DIR", empty)
	_, err = Connect(context.Background(), Config{})
	if want := "LXD not reachable at " + filepath.Join(empty, "unix.socket"); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "/var/snap") {
		t.Errorf("LXD_DIR: err = %v, want it to contain %q and no snap path", err, want)
	}
}
