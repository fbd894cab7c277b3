package lxd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeFS is an instance's file tree behind the fake's file API, with
// LXD 5.0's rules: a push needs its parent directory, keeps an existing
// file's owner and mode unless X-LXD-modify-perm says otherwise, and
// parses a form body (writing an empty file) unless the content type says
// it is not a form.
type fakeFS struct {
	mu    sync.Mutex
	files map[string]*fakeFile
	log   []string // "POST file /a/b", "DELETE /a/b", ...
}

type fakeFile struct {
	typ      string
	uid, gid int
	mode     int64
	data     []byte
}

func newFakeFS(f *fakeLXD) *fakeFS {
	tree := &fakeFS{files: map[string]*fakeFile{"/": {typ: "directory", mode: 0o755}}}
	handle := func(w http.ResponseWriter, r *http.Request) {
		tree.mu.Lock()
		defer tree.mu.Unlock()
		if r.PathValue("name") != "c1" {
			errorResp(w, 404, "Instance not found")
			return
		}
		p := r.URL.Query().Get("path")
		file := tree.files[p]
		switch r.Method {
		case "HEAD", "GET":
			tree.log = append(tree.log, r.Method+" "+p)
			if file == nil {
				errorResp(w, 404, "Not Found")
				return
			}
			w.Header().Set("X-LXD-type", file.typ)
			w.Header().Set("X-LXD-uid", strconv.Itoa(file.uid))
			w.Header().Set("X-LXD-gid", strconv.Itoa(file.gid))
			w.Header().Set("X-LXD-mode", fmt.Sprintf("%04o", file.mode))
			_, _ = w.Write(file.data)
		case "DELETE":
			tree.log = append(tree.log, "DELETE "+p)
			delete(tree.files, p)
			sync200(w, map[string]any{})
		case "POST":
			typ := r.Header.Get("X-LXD-type")
			tree.log = append(tree.log, "POST "+typ+" "+p)
			if parent := tree.files[path.Dir(p)]; parent == nil || parent.typ != "directory" {
				errorResp(w, 404, "Not Found")
				return
			}
			uid, _ := strconv.Atoi(r.Header.Get("X-LXD-uid"))
			gid, _ := strconv.Atoi(r.Header.Get("X-LXD-gid"))
			mode, _ := strconv.ParseInt(r.Header.Get("X-LXD-mode"), 0, 32)
			body, _ := io.ReadAll(r.Body)
			if r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
				body = nil
			}
			switch {
			case file == nil:
				tree.files[p] = &fakeFile{typ: typ, uid: uid, gid: gid, mode: mode, data: body}
			case typ == "file":
				file.data = body
				if strings.Contains(r.Header.Get("X-LXD-modify-perm"), "mode") {
					file.uid, file.gid, file.mode = uid, gid, mode
				}
			}
			sync200(w, map[string]any{})
		}
	}
	f.mux.HandleFunc("/1.0/instances/{name}/files", handle)
	return tree
}

func (tree *fakeFS) takeLog() []string {
	tree.mu.Lock()
	defer tree.mu.Unlock()
	l := tree.log
	tree.log = nil
	return l
}

func (tree *fakeFS) file(p string) fakeFile {
	tree.mu.Lock()
	defer tree.mu.Unlock()
	if f := tree.files[p]; f != nil {
		return *f
	}
	return fakeFile{}
}

// TestPushFileFake: a push creates missing parents only when the first
// try finds none, sends the content as octet-stream with octal mode and
// owner, and on an LXD without instances_files_modify_permissions
// replaces an existing file whose owner or mode differ (delete, then
// push) and overwrites one that matches in place.
func TestPushFileFake(t *testing.T) {
	f := newFake(t)
	tree := newFakeFS(f)
	c := f.connect(t, Config{Project: "p"})
	ctx := context.Background()

	opts := FileOptions{UID: 1000, GID: 1001, Mode: 0o640}
	if err := c.PushFile(ctx, "c1", "/etc/app/conf.d/x.conf", []byte("one"), opts); err != nil {
		t.Fatal(err)
	}
	want := []string{"HEAD /etc/app/conf.d/x.conf", "POST file /etc/app/conf.d/x.conf",
		"POST directory /etc", "POST directory /etc/app", "POST directory /etc/app/conf.d",
		"POST file /etc/app/conf.d/x.conf"}
	if got := tree.takeLog(); !slices.Equal(got, want) {
		t.Errorf("new file in new directories:\n got %q\nwant %q", got, want)
	}
	if got := tree.file("/etc/app/conf.d/x.conf"); string(got.data) != "one" || got.uid != 1000 || got.gid != 1001 || got.mode != 0o640 {
		t.Errorf("file = %+v", got)
	}
	if got := tree.file("/etc/app"); got.typ != "directory" || got.mode != 0o755 || got.uid != 0 {
		t.Errorf("parent = %+v", got)
	}
	for _, r := range f.requests() {
		if r.Method == "POST" && r.Header.Get("X-LXD-type") == "file" {
			if r.Header.Get("Content-Type") != "application/octet-stream" || r.Header.Get("X-LXD-mode") != "0640" ||
				r.Header.Get("X-LXD-write") != "overwrite" || r.URL.Query().Get("project") != "p" {
				t.Errorf("push request: %v %v", r.URL, r.Header)
			}
		}
	}

	// Same owner and mode: overwritten in place.
	if err := c.PushFile(ctx, "c1", "/etc/app/conf.d/x.conf", []byte("two"), opts); err != nil {
		t.Fatal(err)
	}
	if got, want := tree.takeLog(), []string{"HEAD /etc/app/conf.d/x.conf", "POST file /etc/app/conf.d/x.conf"}; !slices.Equal(got, want) {
		t.Errorf("unchanged mode: %q, want %q", got, want)
	}
	// Another mode: deleted, then pushed, so the new mode takes.
	opts.Mode = 0o600
	if err := c.PushFile(ctx, "c1", "/etc/app/conf.d/x.conf", []byte("three"), opts); err != nil {
		t.Fatal(err)
	}
	if got, want := tree.takeLog(), []string{"HEAD /etc/app/conf.d/x.conf", "DELETE /etc/app/conf.d/x.conf", "POST file /etc/app/conf.d/x.conf"}; !slices.Equal(got, want) {
		t.Errorf("changed mode: %q, want %q", got, want)
	}
	if got := tree.file("/etc/app/conf.d/x.conf"); string(got.data) != "three" || got.mode != 0o600 {
		t.Errorf("file after a mode change = %+v", got)
	}
	got, err := c.PullFile(ctx, "c1", "/etc/app/conf.d/x.conf", 100)
	if err != nil || string(got) != "three" {
		t.Errorf("PullFile = %q, %v", got, err)
	}
	if _, err := c.PullFile(ctx, "c1", "/etc/app/conf.d/x.conf", 2); err == nil {
		t.Error("PullFile over its limit did not fail")
	}
	tree.takeLog()

	// A directory in the way, a missing instance, bad paths.
	if err := c.PushFile(ctx, "c1", "/etc/app", []byte("x"), opts); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Errorf("push onto a directory: %v", err)
	}
	if err := c.PushFile(ctx, "gone", "/etc/x", []byte("x"), opts); !errors.Is(err, ErrNotFound) {
		t.Errorf("push into a missing instance: %v", err)
	}
	for _, bad := range []string{"etc/x", "/etc/../x", "/etc/x/", "/"} {
		if err := c.PushFile(ctx, "c1", bad, nil, opts); err == nil {
			t.Errorf("push to %q accepted", bad)
		}
	}
	info, err := c.StatFile(ctx, "c1", "/etc/app/conf.d/x.conf")
	if err != nil || info != (FileInfo{Type: "file", UID: 1000, GID: 1001, Mode: 0o600}) {
		t.Errorf("StatFile = %+v, %v", info, err)
	}
}

// TestPushFileModifyPerm: with instances_files_modify_permissions, one
// request writes the file and its owner and mode, existing or not.
func TestPushFileModifyPerm(t *testing.T) {
	f := newFake(t)
	f.extensions = append(f.extensions, extModifyPerm)
	tree := newFakeFS(f)
	c := f.connect(t, Config{})
	ctx := context.Background()
	for _, mode := range []iofs.FileMode{0o644, 0o600} {
		if err := c.PushFile(ctx, "c1", "/x", []byte("x"), FileOptions{UID: 5, GID: 6, Mode: mode}); err != nil {
			t.Fatal(err)
		}
		if got := tree.takeLog(); !slices.Equal(got, []string{"POST file /x"}) {
			t.Errorf("requests: %q", got)
		}
		if got := tree.file("/x"); got.mode != int64(mode) || got.uid != 5 || got.gid != 6 {
			t.Errorf("file = %+v, want mode %o", got, mode)
		}
	}
}

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{limit: 10}
	var all bytes.Buffer
	for i := range 50 {
		s := fmt.Sprintf("%d,", i)
		all.WriteString(s)
		_, _ = tb.Write([]byte(s))
		got, truncated := tb.snapshot()
		want := all.Bytes()
		if len(want) > 10 {
			want = want[len(want)-10:]
		}
		if !bytes.Equal(got, want) || truncated != (all.Len() > 10) {
			t.Fatalf("after %q: %q %v, want %q", all.String(), got, truncated, want)
		}
	}
	_, _ = tb.Write(bytes.Repeat([]byte("z"), 25))
	if got, truncated := tb.snapshot(); string(got) != "zzzzzzzzzz" || !truncated {
		t.Errorf("after a long write: %q %v", got, truncated)
	}
}

func TestPrivileged(t *testing.T) {
	for v, want := range map[string]bool{"": false, "true": true, "TRUE": true, "1": true, "yes": true, "on": true, "false": false, "0": false, "no": false} {
		i := Instance{ExpandedConfig: map[string]string{"security.privileged": v}}
		if got := i.Privileged(); got != want {
			t.Errorf("security.privileged=%q: %v", v, got)
		}
	}
	// Only the expanded config counts: a profile may set it.
	i := Instance{InstancePut: InstancePut{Config: map[string]string{"security.privileged": "true"}}}
	if i.Privileged() {
		t.Error("local config alone made it privileged")
	}
}
