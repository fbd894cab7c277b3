package spec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func mustLoad(t *testing.T, fsys fs.FS) *Result {
	t.Helper()
	r, err := Load(t.Context(), fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// appNames lists the names of the valid apps.
func appNames(r *Result) []string {
	var out []string
	for _, a := range r.Apps {
		out = append(out, a.Metadata.Name)
	}
	return out
}

// countingFS records which files were opened and can run a hook on Open.
type countingFS struct {
	fs.FS
	opened []string
	onOpen func(name string)
}

func (c *countingFS) Open(name string) (fs.File, error) {
	if name != "." {
		c.opened = append(c.opened, name)
	}
	if c.onOpen != nil {
		c.onOpen(name)
	}
	return c.FS.Open(name)
}

func TestLoadHonoursContext(t *testing.T) {
	fsys := fstest.MapFS{
		"a.yaml": {Data: []byte(app("a"))},
		"b.yaml": {Data: []byte(app("b"))},
		"c.yaml": {Data: []byte(app("c"))},
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Load(ctx, fsys, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before the walk: err = %v, want context.Canceled", err)
	}

	// Cancelled while the first file is read: no other file is opened.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	cfs := &countingFS{FS: fsys, onOpen: func(name string) {
		if strings.HasSuffix(name, ".yaml") {
			cancel()
		}
	}}
	if _, err := Load(ctx, cfs, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during the walk: err = %v, want context.Canceled", err)
	}
	if len(cfs.opened) != 1 {
		t.Errorf("opened %v after the context ended, want only the first file", cfs.opened)
	}
}

// Symlinks are errors on their entry, never followed: not to a file outside
// the tree (whose content must never show), not to /dev/zero, not when
// dangling or looping, not to a directory.
func TestLoadRejectsSymlinksOnDisk(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "specs")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "apps"), 0o755))
	must(os.MkdirAll(filepath.Join(top, "elsewhere"), 0o755))
	must(os.WriteFile(filepath.Join(top, "secret.yaml"), []byte("password: [hunter2-SECRET\n"), 0o644))
	must(os.WriteFile(filepath.Join(top, "elsewhere", "x.yaml"), []byte(app("elsewhere")), 0o644))
	must(os.WriteFile(filepath.Join(root, "apps", "ok.yaml"), []byte(app("ok")), 0o644))
	for link, target := range map[string]string{
		"apps/secret.yaml": filepath.Join(top, "secret.yaml"),
		"zero.yaml":        "/dev/zero",
		"dangling.yml":     filepath.Join(top, "nothing-here"),
		"loop.yaml":        "loop.yaml",
		"linked-dir":       filepath.Join(top, "elsewhere"),
		"notes.txt":        filepath.Join(top, "secret.yaml"),
	} {
		must(os.Symlink(target, filepath.Join(root, link)))
	}
	r, err := LoadDir(t.Context(), root, Options{})
	if err != nil {
		t.Fatalf("a symlink aborted the load: %v", err)
	}
	const msg = ": is a symbolic link; berth never follows symlinks in the spec tree: put the file or directory itself here"
	want := []string{"apps/secret.yaml", "dangling.yml", "linked-dir", "loop.yaml", "notes.txt", "zero.yaml"}
	var wantDiags []string
	for _, f := range want {
		wantDiags = append(wantDiags, f+msg)
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), wantDiags)
	sameLines(t, "unparsable", r.Unparsable, want)
	sameLines(t, "apps", appNames(r), []string{"ok"})
	if strings.Contains(r.Diagnostics.Error(), "SECRET") || strings.Contains(r.Diagnostics.Error(), top) {
		t.Errorf("a link's target or its content reached the diagnostics:\n%v", r.Diagnostics)
	}
}

// A Git tree reports a committed symlink with fs.ModeSymlink; the policy is
// the same as on disk.
func TestLoadRejectsSymlinksInFS(t *testing.T) {
	fsys := fstest.MapFS{
		"apps/ok.yaml":     {Data: []byte(app("ok"))},
		"apps/secret.yaml": {Data: []byte("../../secret.yaml"), Mode: fs.ModeSymlink},
		"linked-dir":       {Data: []byte("apps"), Mode: fs.ModeSymlink},
		"loop.yaml":        {Data: []byte("loop.yaml"), Mode: fs.ModeSymlink},
		"self.yaml":        {Data: []byte("apps/ok.yaml"), Mode: fs.ModeSymlink},
	}
	r := mustLoad(t, fsys)
	const msg = ": is a symbolic link; berth never follows symlinks in the spec tree: put the file or directory itself here"
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"apps/secret.yaml" + msg, "linked-dir" + msg, "loop.yaml" + msg, "self.yaml" + msg,
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"apps/secret.yaml", "linked-dir", "loop.yaml", "self.yaml"})
	sameLines(t, "apps", appNames(r), []string{"ok"})
}

func TestLoadRejectsNonRegularFiles(t *testing.T) {
	fsys := fstest.MapFS{
		"ok.yaml":   {Data: []byte(app("ok"))},
		"fifo.yaml": {Mode: fs.ModeNamedPipe},
		"sock.yml":  {Mode: fs.ModeSocket},
		"tty.yaml":  {Mode: fs.ModeDevice | fs.ModeCharDevice},
		"disk.yaml": {Mode: fs.ModeDevice},
		"fifo.txt":  {Mode: fs.ModeNamedPipe}, // not a spec name: ignored
	}
	cfs := &countingFS{FS: fsys}
	r, err := Load(t.Context(), cfs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"disk.yaml: is a device; only regular files are read as specs",
		"fifo.yaml: is a named pipe (FIFO); only regular files are read as specs",
		"sock.yml: is a socket; only regular files are read as specs",
		"tty.yaml: is a character device; only regular files are read as specs",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"disk.yaml", "fifo.yaml", "sock.yml", "tty.yaml"})
	sameLines(t, "opened", cfs.opened, []string{"ok.yaml"})
}

// endlessFS has one file whose Stat says it is small while its content never
// ends, like /dev/zero behind a lying file system.
type endlessFS struct{}

type endlessFile struct{}

type smallInfo struct{}

func (smallInfo) Name() string       { return "big.yaml" }
func (smallInfo) Size() int64        { return 10 }
func (smallInfo) Mode() fs.FileMode  { return 0o644 }
func (smallInfo) ModTime() time.Time { return time.Time{} }
func (smallInfo) IsDir() bool        { return false }
func (smallInfo) Sys() any           { return nil }

func (endlessFile) Stat() (fs.FileInfo, error) { return smallInfo{}, nil }
func (endlessFile) Close() error               { return nil }
func (endlessFile) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '#'
	}
	return len(p), nil
}

func (endlessFS) Open(name string) (fs.File, error) {
	if name == "big.yaml" {
		return endlessFile{}, nil
	}
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func (endlessFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if name != "." {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	return []fs.DirEntry{fs.FileInfoToDirEntry(smallInfo{})}, nil
}

func (endlessFS) Stat(name string) (fs.FileInfo, error) {
	if name == "." {
		return fstest.MapFS{"x": {}}.Stat(".")
	}
	return smallInfo{}, nil
}

func TestLoadRejectsLargeFiles(t *testing.T) {
	big := make([]byte, MaxFileSize+1)
	for i := range big {
		big[i] = '#'
	}
	r := mustLoad(t, fstest.MapFS{
		"ok.yaml":  {Data: []byte(app("ok"))},
		"big.yaml": {Data: big},
		"max.yaml": {Data: big[:MaxFileSize]},
	})
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"big.yaml: is too large: 1048577 bytes, a spec file may have at most 1 MiB (1048576 bytes)",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"big.yaml"})
	sameLines(t, "apps", appNames(r), []string{"ok"})

	// Stat lies: the read stops at the limit all the same.
	r = mustLoad(t, endlessFS{})
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"big.yaml: is too large: a spec file may have at most 1 MiB",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"big.yaml"})

	r, err := LoadBytes("big.yaml", big, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "LoadBytes", diagStrings(r.Diagnostics), []string{
		"big.yaml: is too large: 1048577 bytes, a spec file may have at most 1 MiB (1048576 bytes)",
	})
}

func TestLoadTreeBudget(t *testing.T) {
	fill := make([]byte, MaxFileSize)
	for i := range fill {
		fill[i] = '#'
	}
	fsys := fstest.MapFS{"a-ok.yaml": {Data: []byte(app("ok"))}}
	for i := range 17 {
		fsys[fmt.Sprintf("f%02d.yaml", i)] = &fstest.MapFile{Data: fill}
	}
	r := mustLoad(t, fsys)
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"f15.yaml: not read: the spec files together are over the 16 MiB budget of a spec tree",
		"f16.yaml: not read: the spec files together are over the 16 MiB budget of a spec tree",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"f15.yaml", "f16.yaml"})
	sameLines(t, "apps", appNames(r), []string{"ok"})
}

func TestLoadFileCountLimit(t *testing.T) {
	fsys := fstest.MapFS{}
	for i := range MaxFiles + 2 {
		fsys[fmt.Sprintf("f%04d.yaml", i)] = &fstest.MapFile{Data: []byte("# empty\n")}
	}
	r := mustLoad(t, fsys)
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"f1000.yaml: not read: the spec tree has more than 1000 spec files (the limit)",
		"f1001.yaml: not read: the spec tree has more than 1000 spec files (the limit)",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"f1000.yaml", "f1001.yaml"})
}

func TestLoadUnreadableFileIsADiagnostic(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode")
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "ok.yaml"), []byte(app("ok")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "locked.yaml"), []byte(app("locked")), 0o000); err != nil {
		t.Fatal(err)
	}
	r, err := LoadDir(t.Context(), root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{"locked.yaml: cannot be read: permission denied"})
	sameLines(t, "unparsable", r.Unparsable, []string{"locked.yaml"})
}

// aliasHeavy is a file of docs documents, the first defining a 900-key
// anchor and each merging it 40 times: about 75,000 nodes to read per
// document, under the document's budget, but adding up across documents
// (anchors are shared by the documents of a file).
func aliasHeavy(prefix string, docs int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: berth/v1\nkind: App\nmetadata: {name: %sbase}\nspec:\n  system: {image: debian}\n  container:\n    image: nginx\n    env: &m {", prefix)
	for i := range 900 {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "K%d: v", i)
	}
	b.WriteString("}\n")
	merges := strings.TrimSuffix(strings.Repeat("*m, ", 40), ", ")
	for i := range docs {
		fmt.Fprintf(&b, "---\napiVersion: berth/v1\nkind: App\nmetadata: {name: %s%d}\nspec:\n  system: {image: debian}\n  container:\n    image: nginx\n    env: {<<: [%s]}\n", prefix, i, merges)
	}
	return b.String()
}

// The alias budget is per file as well as per document: many small
// alias-heavy documents in one file used to cost a minute of CPU.
func TestAliasBudgetPerFile(t *testing.T) {
	src := aliasHeavy("a", 500)
	if len(src) > MaxFileSize {
		t.Fatalf("test file is %d bytes, over the size limit", len(src))
	}
	l := newLoader(Options{})
	if err := l.file(t.Context(), "many.yaml", []byte(src)); err != nil {
		t.Fatal(err)
	}
	r := l.result()
	var budgetDiags []string
	for _, d := range r.Diagnostics {
		if strings.Contains(d.Message, "too large") {
			budgetDiags = append(budgetDiags, d.String())
		}
	}
	if len(budgetDiags) != 1 || !strings.Contains(budgetDiags[0], "many.yaml:") ||
		!strings.Contains(budgetDiags[0], ": file is too large after expanding aliases and merge keys: over 2000000 nodes to read") {
		t.Errorf("want one file-budget diagnostic, got:\n%v", r.Diagnostics)
	}
	if len(r.Diagnostics) != 1 {
		t.Errorf("want no other diagnostic, got:\n%v", r.Diagnostics)
	}
	sameLines(t, "unparsable", r.Unparsable, []string{"many.yaml"})
	if len(r.Apps) != 0 {
		t.Errorf("%d apps of a file over budget were applied", len(r.Apps))
	}
	if spent := MaxTreeExpansion - l.tree.left; spent > MaxFileExpansion+MaxDocumentExpansion {
		t.Errorf("read %d nodes, want the file's budget to stop it near %d", spent, MaxFileExpansion)
	}
	if n := len(r.InvalidApps); n < 10 || n > 40 {
		t.Errorf("%d documents decoded before the budget ran out, want a few dozen", n)
	}
}

// The file: 5,000 small alias-heavy documents. It is over the size
// limit; with the size limit out of the way, the document count stops it.
func TestAliasBudgetManyDocuments(t *testing.T) {
	src := aliasHeavy("a", 5000)
	r, err := LoadBytes("many.yaml", []byte(src), Options{})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "LoadBytes", diagStrings(r.Diagnostics), []string{
		fmt.Sprintf("many.yaml: is too large: %d bytes, a spec file may have at most 1 MiB (1048576 bytes)", len(src)),
	})
	l := newLoader(Options{})
	var b strings.Builder
	for i := range MaxDocuments + 1 {
		fmt.Fprintf(&b, "---\n# %d\n", i)
	}
	if err := l.file(t.Context(), "docs.yaml", []byte(b.String())); err != nil {
		t.Fatal(err)
	}
	r = l.result()
	sameLines(t, "document count", diagStrings(r.Diagnostics), []string{
		"docs.yaml:2001:1: too many documents: a spec file may have at most 1000",
	})
	sameLines(t, "unparsable", r.Unparsable, []string{"docs.yaml"})
}

// The tree has a budget too: files each under theirs add up.
func TestAliasBudgetPerTree(t *testing.T) {
	fsys := fstest.MapFS{"a-ok.yaml": {Data: []byte(app("ok"))}}
	for i := range 12 {
		fsys[fmt.Sprintf("f%02d.yaml", i)] = &fstest.MapFile{Data: []byte(aliasHeavy(fmt.Sprintf("f%d-", i), 20))}
	}
	r := mustLoad(t, fsys)
	// The budget runs out in one file; the files after it are not read.
	out := ""
	for _, d := range r.Diagnostics {
		if strings.HasPrefix(d.Message, "spec tree is too large") {
			out = d.File
		}
	}
	if out == "" || out == "f00.yaml" || out == "f11.yaml" {
		t.Fatalf("want the tree budget to run out in a middle file, got:\n%v", r.Diagnostics)
	}
	var want, wantUnparsable, wantApps []string
	for i := range 12 {
		f := fmt.Sprintf("f%02d.yaml", i)
		switch {
		case f == out:
			want = append(want, f+": spec tree is too large after expanding aliases and merge keys: over 8000000 nodes to read")
			wantUnparsable = append(wantUnparsable, f)
		case f > out:
			want = append(want, f+": not read: the spec tree is too large after expanding aliases and merge keys (the budget ran out in "+out+")")
			wantUnparsable = append(wantUnparsable, f)
		default:
			wantApps = append(wantApps, fmt.Sprintf("f%d-base", i))
		}
	}
	var got []string
	for _, d := range r.Diagnostics {
		got = append(got, d.File+": "+d.Message)
	}
	sameLines(t, "diagnostics", got, want)
	sameLines(t, "unparsable", r.Unparsable, wantUnparsable)
	for _, a := range append(wantApps, "ok") {
		if !slices.Contains(appNames(r), a) {
			t.Errorf("app %s of a file before the budget ran out is missing", a)
		}
	}
	if n := len(r.Apps); n != 1+len(wantApps)*21 {
		t.Errorf("%d apps, want those of the files before the budget ran out", n)
	}
}

// A large document with no aliases is "too large", not "too large after
// expanding aliases", and is not read further, so no false "required field
// is missing" follows.
func TestLargeDocumentDiagnostic(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: berth/v1\nkind: App\nmetadata: {name: big}\nspec:\n")
	for i := range 30_000 {
		fmt.Fprintf(&b, "  k%d: 1\n", i)
	}
	r := mustLoadBytes(t, b.String(), Options{})
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		"app.yaml:1:1: document is too large: more than 50000 YAML nodes (keys, values and list items); an App has a few hundred",
	})
	sameLines(t, "unidentified", r.Unidentified, []string{"app.yaml"})
}

// When the alias budget runs out, nothing after it is reported: the
// document was only partly read.
func TestAliasBombNoFollowOnDiagnostics(t *testing.T) {
	// The bomb comes before the required spec.container.
	src := "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec:\n  system:\n    image: debian\n    config:\n      <<: [&l0 {a: \"1\"}"
	for i := 1; i <= 40; i++ {
		src += fmt.Sprintf(", &l%d {<<: [*l%d, *l%d]}", i, i-1, i-1)
	}
	src += "]\n"
	r := mustLoadBytes(t, src, Options{})
	if len(r.Diagnostics) != 1 || r.Diagnostics[0].Path != "" ||
		r.Diagnostics[0].Message != "document is too large after expanding aliases and merge keys: over 200000 nodes to read" {
		t.Errorf("want only the budget diagnostic, got:\n%v", r.Diagnostics)
	}
	sameLines(t, "invalid", r.InvalidApps, []string{"web"})
}

// Every number of an App has a range, and out-of-range values (too large
// for 64 bits included), NaN and infinities are diagnostics that say so.
func TestNumbersAreBounded(t *testing.T) {
	hc := func(fields string) string { return minimal + "    healthcheck: {test: [NONE], " + fields + "}\n" }
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"replicas at the limit", minimal + "  replicas: 1000\n", nil},
		{"replicas over the limit", minimal + "  replicas: 1001\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got 1001"}},
		{"replicas a billion", minimal + "  replicas: 1000000000\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got 1000000000"}},
		{"replicas max int64", minimal + "  replicas: 9223372036854775807\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got 9223372036854775807"}},
		{"replicas over 64 bits", minimal + "  replicas: 18446744073709551616\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got 18446744073709551616"}},
		{"replicas far over 64 bits", minimal + "  replicas: " + strings.Repeat("9", 400) + "\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got " + strings.Repeat("9", 400)}},
		{"replicas under min int64", minimal + "  replicas: -9223372036854775809\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got -9223372036854775809"}},
		{"replicas hexadecimal over the limit", minimal + "  replicas: 0x10000\n",
			[]string{"app.yaml:10:13: spec.replicas: must be between 0 and 1000, got 0x10000"}},
		{"replicas quoted number", minimal + "  replicas: \"18446744073709551616\"\n",
			[]string{`app.yaml:10:13: spec.replicas: expected an integer, got string "18446744073709551616"`}},
		{"replicas NaN", minimal + "  replicas: .nan\n",
			[]string{"app.yaml:10:13: spec.replicas: expected an integer, got number .nan"}},
		{"replicas infinity", minimal + "  replicas: .inf\n",
			[]string{"app.yaml:10:13: spec.replicas: expected an integer, got number .inf"}},
		{"replicas minus infinity", minimal + "  replicas: -.Inf\n",
			[]string{"app.yaml:10:13: spec.replicas: expected an integer, got number -.Inf"}},
		{"replicas exponent", minimal + "  replicas: 1e3\n",
			[]string{"app.yaml:10:13: spec.replicas: expected an integer, got number 1e3"}},
		{"maxUnavailable at the limit", minimal + "  update: {maxUnavailable: 1000}\n", nil},
		{"maxUnavailable over the limit", minimal + "  update: {maxUnavailable: 1001}\n",
			[]string{"app.yaml:10:28: spec.update.maxUnavailable: must be between 1 and 1000, got 1001"}},
		{"maxUnavailable NaN", minimal + "  update: {maxUnavailable: .NaN}\n",
			[]string{"app.yaml:10:28: spec.update.maxUnavailable: expected an integer, got number .NaN"}},
		{"retries at the limit", hc("retries: 100"), nil},
		{"retries over the limit", hc("retries: 101"),
			[]string{"app.yaml:10:42: spec.container.healthcheck.retries: must be between 0 and 100, got 101"}},
		{"retries over 64 bits", hc("retries: 99999999999999999999"),
			[]string{"app.yaml:10:42: spec.container.healthcheck.retries: must be between 0 and 100, got 99999999999999999999"}},
		{"durations at the limits", hc("interval: 1ms, timeout: 24h, startPeriod: 1h30m"), nil},
		{"interval under Docker's minimum", hc("interval: 500us"),
			[]string{`app.yaml:10:43: spec.container.healthcheck.interval: duration "500us" is too short: at least 1ms`}},
		{"timeout over a day", hc("timeout: 25h"),
			[]string{`app.yaml:10:42: spec.container.healthcheck.timeout: duration "25h" is too long: at most 24h`}},
		{"startPeriod over 64 bits", hc("startPeriod: 9999999999h"),
			[]string{`app.yaml:10:46: spec.container.healthcheck.startPeriod: duration "9999999999h" is out of range: at most 24h`}},
		{"duration NaN", hc("interval: .nan"),
			[]string{`app.yaml:10:43: spec.container.healthcheck.interval: expected a duration like "5s" or "2m", got number .nan`}},
		{"healthTimeout too short", minimal + "  update: {healthTimeout: 10ms}\n",
			[]string{`app.yaml:10:27: spec.update.healthTimeout: duration "10ms" is too short: at least 1s`}},
		{"healthTimeout too long", minimal + "  update: {healthTimeout: 48h}\n",
			[]string{`app.yaml:10:27: spec.update.healthTimeout: duration "48h" is too long: at most 24h`}},
		{"memory overflowing 64 bits", sys("    limits: {memory: 18446744073709551615EiB}\n"),
			[]string{`app.yaml:8:22: spec.system.limits.memory: memory size "18446744073709551615EiB" is too large: at most 1PiB`}},
		{"memory product overflowing 64 bits", sys("    limits: {memory: 17179869184GiB}\n"),
			[]string{`app.yaml:8:22: spec.system.limits.memory: memory size "17179869184GiB" is too large: at most 1PiB`}},
		{"memory bytes over 64 bits", sys("    limits: {memory: 18446744073709551616}\n"),
			[]string{`app.yaml:8:22: spec.system.limits.memory: memory size "18446744073709551616" is too large: at most 1PiB`}},
		{"memory over the sane limit", sys("    limits: {memory: 2PiB}\n"),
			[]string{`app.yaml:8:22: spec.system.limits.memory: memory size "2PiB" is too large: at most 1PiB`}},
		{"memory NaN", sys("    limits: {memory: .nan}\n"),
			[]string{`app.yaml:8:22: spec.system.limits.memory: expected a string, got number .nan; quote it: ".nan"`}},
		{"cpu count over the limit", sys("    limits: {cpu: 4097}\n"),
			[]string{`app.yaml:8:19: spec.system.limits.cpu: CPU count must be between 1 and 4096, got "4097"`}},
		{"cpu count over 64 bits", sys("    limits: {cpu: 99999999999999999999}\n"),
			[]string{`app.yaml:8:19: spec.system.limits.cpu: CPU count must be between 1 and 4096, got "99999999999999999999"`}},
		{"cpu set number over 64 bits", sys("    limits: {cpu: \"0-99999999999999999999\"}\n"),
			[]string{`app.yaml:8:19: spec.system.limits.cpu: CPU number 99999999999999999999 in "0-99999999999999999999" is out of range: CPU numbers go from 0 to 4095`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoadBytes(t, tt.src, Options{})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
		})
	}
}

// Every list and mapping, and every string, has a bounded size.
func TestListsAndStringsAreBounded(t *testing.T) {
	items := func(n int, f string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = fmt.Sprintf(f, i)
		}
		return strings.Join(parts, ", ")
	}
	tests := []struct {
		name string
		src  string
		want string // the one diagnostic, without its position
	}{
		{"command", minimal + "    command: [" + items(MaxItems+1, "a%d") + "]\n",
			"spec.container.command: has 1001 items; a list may have at most 1000"},
		{"provision run", sys("    provision: {run: [" + items(MaxItems+1, "a%d") + "]}\n"),
			"spec.system.provision.run: has 1001 items; a list may have at most 1000"},
		{"healthcheck test", minimal + "    healthcheck: {test: [CMD, " + items(MaxItems, "a%d") + "]}\n",
			"spec.container.healthcheck.test: has 1001 items; a list may have at most 1000"},
		{"env", minimal + "    env: {" + items(MaxItems+1, "A%d: x") + "}\n",
			"spec.container.env: has 1001 entries; a mapping may have at most 1000"},
		{"env through a merge key", minimal + "    env: {<<: {" + items(MaxItems, "A%d: x") + "}, B: y}\n",
			"spec.container.env: has 1001 entries; a mapping may have at most 1000"},
		{"volumes", minimal + "    volumes: [" + items(MaxItems+1, "{source: /s%d, target: /t}") + "]\n",
			"spec.container.volumes: has 1001 items; a list may have at most 1000"},
		{"profiles", sys("    profiles: [" + items(MaxItems+1, "p%d") + "]\n"),
			"spec.system.profiles: has 1001 items; a list may have at most 1000"},
		{"config", sys("    config: {" + items(MaxItems+1, "user.k%d: x") + "}\n"),
			"spec.system.config: has 1001 entries; a mapping may have at most 1000"},
		{"devices", sys("    devices: {" + items(MaxItems+1, "d%d: {type: none}") + "}\n"),
			"spec.system.devices: has 1001 entries; a mapping may have at most 1000"},
		{"device keys", sys("    devices: {d: {type: none, " + items(MaxItems, "k%d: x") + "}}\n"),
			"spec.system.devices.d: has 1001 entries; a mapping may have at most 1000"},
		{"cloudInit", sys("    cloudInit: " + strings.Repeat("x", MaxStringLen+1) + "\n"),
			"spec.system.cloudInit: is 262145 bytes long; a string may have at most 262144 (256 KiB)"},
		{"env value", minimal + "    env: {A: " + strings.Repeat("x", MaxStringLen+1) + "}\n",
			"spec.container.env.A: is 262145 bytes long; a string may have at most 262144 (256 KiB)"},
		{"config key", sys("    config:\n      ? " + strings.Repeat("k", MaxStringLen+1) + "\n      : x\n"),
			"spec.system.config: key is 262145 bytes long; at most 262144 are allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustLoadBytes(t, tt.src, Options{})
			if len(r.Diagnostics) != 1 {
				t.Fatalf("want one diagnostic, got:\n%v", r.Diagnostics)
			}
			d := r.Diagnostics[0]
			if got := d.Path + ": " + d.Message; got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
	// At the limits, all is well.
	for _, src := range []string{
		minimal + "    command: [" + items(MaxItems, "a%d") + "]\n",
		minimal + "    env: {" + items(MaxItems, "A%d: x") + "}\n",
		sys("    cloudInit: " + strings.Repeat("x", MaxStringLen) + "\n"),
	} {
		if r := mustLoadBytes(t, src, Options{}); len(r.Diagnostics) != 0 {
			t.Errorf("at the limit: %v", r.Diagnostics)
		}
	}
}

// YAML syntax errors carry their real 1-based line: yaml.v3 counts its
// parser's lines from 0, its scanner's from 1, leaves out line 1, and gives
// no line at all for bad bytes or an unknown anchor.
func TestYAMLSyntaxErrorPositions(t *testing.T) {
	tests := []struct {
		src, want string
	}{
		// Parser errors (yaml.v3 says one line less).
		{"x: 1\ny: 2\na: [1, 2\nb: 3\n", `app.yaml:3:1: invalid YAML: did not find expected ',' or ']'`},
		{"x: 1\ny: {a: 1\nz: 2\n", `app.yaml:2:1: invalid YAML: did not find expected ',' or '}'`},
		{"x: 1\n- a\n", `app.yaml:2:1: invalid YAML: did not find expected key`},
		{"x: 1\ny:\n  - a\n  b: 1\n", `app.yaml:3:1: invalid YAML: did not find expected '-' indicator`},
		{"%YAML 1.1\n%YAML 1.1\n---\na: 1\n", `app.yaml:2:1: invalid YAML: found duplicate %YAML directive`},
		{"x: 1\ny: !foo!bar x\n", `app.yaml:2:1: invalid YAML: found undefined tag handle`},
		{"# one\n---\nx: [\n", `app.yaml:3:1: invalid YAML: did not find expected node content`},
		// On line 1 yaml.v3 gives no line; at the end it points past the
		// last line.
		{"a: [1, 2\n", `app.yaml:1:1: invalid YAML: did not find expected ',' or ']'`},
		{"a: b: c\n", `app.yaml:1:1: invalid YAML: mapping values are not allowed in this context`},
		{"@a\n", `app.yaml:1:1: invalid YAML: found character that cannot start any token`},
		{"x: \"abc\n", `app.yaml:1:1: invalid YAML: found unexpected end of stream`},
		// Scanner errors (yaml.v3's line is right).
		{"x: 1\na: b: c\n", `app.yaml:2:1: invalid YAML: mapping values are not allowed in this context`},
		{"x: 1\n\ty: 2\n", `app.yaml:2:1: invalid YAML: found a tab character that violates indentation`},
		{"x: 1\ny: \"abc\n\n", `app.yaml:2:1: invalid YAML: found unexpected end of stream`},
		{"a: 1\n  b: 2\n", `app.yaml:2:1: invalid YAML: mapping values are not allowed in this context`},
		{"x: 1\n@a\n", `app.yaml:2:1: invalid YAML: found character that cannot start any token`},
		{"x: 1\ny: |0\n", `app.yaml:2:1: invalid YAML: found an indentation indicator equal to 0`},
		// No line from yaml.v3 at all: found in the bytes.
		{"x: 1\ny: ab\x01c\n", `app.yaml:2:6: invalid YAML: control characters are not allowed`},
		{"x: 1\ny: é\xff\n", `app.yaml:2:5: invalid YAML: invalid leading UTF-8 octet`},
		{"x: 1\ny: [a, *nope]\n", `app.yaml:2:8: invalid YAML: unknown anchor 'nope' referenced`},
		{"# one\n---\ny: *a\n", `app.yaml:3:4: invalid YAML: unknown anchor 'a' referenced`},
	}
	for _, tt := range tests {
		r := mustLoadBytes(t, tt.src, Options{})
		sameLines(t, fmt.Sprintf("%q", tt.src), diagStrings(r.Diagnostics), []string{tt.want})
	}
}

// Text renderings escape control characters: a file name with a newline or
// ESC, or a spec value echoed in a message, cannot forge a line or drive
// the terminal. The fields, and so JSON, stay exact.
func TestDiagnosticTextEscapesControlCharacters(t *testing.T) {
	name := "evil\n\x1b[1A\x1b[2Kok.yaml:1:1: all good\u202e.yaml"
	fsys := fstest.MapFS{name: {Data: []byte(strings.Replace(minimal, "image: debian", "image: \"deb ian\\e[2K\\u2028\"", 1))}}
	r := mustLoad(t, fsys)
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`evil\n\x1b[1A\x1b[2Kok.yaml:1:1: all good\u202e.yaml:7:12: spec.system.image: must be an LXD image alias or fingerprint (or remote:alias) without spaces, got "deb ian\x1b[2K\u2028"`,
	})
	if d := r.Diagnostics[0]; d.File != name {
		t.Errorf("File = %q, want the exact name %q", d.File, name)
	}
	if got := r.Diagnostics.Error(); strings.ContainsAny(got, "\n\x1b\u202e\u2028") {
		t.Errorf("Error() holds control characters: %q", got)
	}
	b, err := json.Marshal(r.Diagnostics[0])
	if err != nil || !strings.Contains(string(b), `"File":"evil\n\u001b[1A`) {
		t.Errorf("JSON = %s (%v), want the exact file name", b, err)
	}
	// A duplicate names the other file in its message: escaped too.
	fsys = fstest.MapFS{"a\x1b.yaml": {Data: []byte(minimal)}, "b.yaml": {Data: []byte(minimal)}}
	r = mustLoad(t, fsys)
	sameLines(t, "duplicate", diagStrings(r.Diagnostics), []string{
		`b.yaml:4:9: metadata.name: duplicate app name "web" (first defined at a\x1b.yaml:4)`,
	})
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"tab\there", `tab\there`},
		{"bell\a del\x7f c1\u0085 bad\xff sep\u2029 bidi\u2066 lrm\u200e", `bell\a del\x7f c1\u0085 bad\xff sep\u2029 bidi\u2066 lrm\u200e`},
		{"héllo ünïcode ✓ \\n stays", "héllo ünïcode ✓ \\n stays"},
	}
	for _, tt := range tests {
		if got := EscapeText(tt.in); got != tt.want {
			t.Errorf("EscapeText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
