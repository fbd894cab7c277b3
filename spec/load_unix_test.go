//go:build unix

package spec

import (
	"os"
	"path/filepath"
	"strings"
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

// A spec file or folder whose name is not UTF-8 cannot be opened through
// an fs.FS: it is named, escaped, with the reason, not "cannot be read:
// invalid argument"; a file that is no spec is left alone as ever.
func TestLoadNamesEntriesWithNonUTF8Names(t *testing.T) {
	root := t.TempDir()
	for name, data := range map[string]string{
		"ok.yaml":           app("ok"),
		"caf\xe9.yaml":      app("cafe"),
		"dir\xff/x.yaml":    app("x"),
		"notes\xff.txt":     "not a spec",
		".hidden\xff/y.yml": app("y"),
	} {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Skipf("this file system takes no such name: %v", err)
		}
	}
	r, err := LoadDir(t.Context(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`caf\xe9.yaml: cannot be read: its name "caf\xe9.yaml" is not valid UTF-8, and berth reads files by UTF-8 names only; rename it`,
		`dir\xff: cannot be read: its name "dir\xff" is not valid UTF-8, and berth reads files by UTF-8 names only; rename it`,
	})
	// The message stays exact where the file name cannot (JSON replaces
	// bad bytes), and the entries stop pruning.
	if !strings.Contains(r.Diagnostics[0].Message, `"caf\xe9.yaml"`) {
		t.Errorf("message %q does not name the file escaped", r.Diagnostics[0].Message)
	}
	sameLines(t, "unparsable", r.Unparsable, []string{"caf\xe9.yaml", "dir\xff"})
	if len(r.Apps) != 1 || r.Apps[0].Metadata.Name != "ok" {
		t.Errorf("apps %v, want ok", r.Apps)
	}
}
