package source

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	pathpkg "path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/berth-gitops/berth/clock"
)

// DefaultDebounce is the quiet time WatchRepo waits for after a change: a
// commit touches several files (objects, index, ref, logs) and an editor
// saves with several writes; one reconcile for all of them is enough.
const DefaultDebounce = 200 * time.Millisecond

// watched directory kinds: what an event inside them means.
type watchKind int

const (
	kindGitDir   watchKind = iota // HEAD (and packed-refs when not a linked work tree)
	kindCommon                    // packed-refs of a linked work tree's main repository
	kindRefs                      // refs/heads and below
	kindWorkTree                  // the files people edit
)

// WatchRepo is WatchRepoWith with only the options Worktree and Debounce.
func WatchRepo(ctx context.Context, path string, worktree bool, debounce time.Duration, trigger func(reason string)) error {
	return WatchRepoWith(ctx, path, WatchOptions{Worktree: worktree, Debounce: debounce}, trigger)
}

// WatchOptions tune WatchRepoWith. The zero value watches commits,
// debounced by DefaultDebounce on the system clock.
type WatchOptions struct {
	// Worktree also watches the files of the work tree (recursively,
	// skipping .git, adding folders as they appear): the local
	// development loop, where saving a file is enough.
	Worktree bool
	// Debounce is the quiet time a burst of changes ends with
	// (DefaultDebounce when <= 0).
	Debounce time.Duration
	// Clock times the debounce; nil is the system clock.
	Clock clock.Clock
	// OnError receives a problem that does not stop the watch: a folder
	// that could not be watched once the watch runs (made later, or
	// walked again after lost events). Changes in that folder are then
	// seen by the next poll only. It is called from WatchRepoWith's
	// goroutine. When nil, such a problem ends WatchRepoWith with its
	// error, as it does at the start, and the caller falls back to
	// polling.
	OnError func(error)

	// Seams for tests.
	watching func()                    // runs once everything is watched
	handled  func(name, reason string) // runs after each event
	refuse   func(dir string) error    // an error: dir cannot be watched
}

// WatchRepoWith calls trigger when a commit lands in the repository at
// path (a work tree, any folder in it, or a bare repository): it watches
// refs/heads (recursively), packed-refs and HEAD. Git updates those by
// writing a .lock file and renaming it over the old one, so the folders
// holding them are watched, not the files, and .lock names are ignored.
// With opts.Worktree it also watches the files of the work tree.
//
// Events are debounced: trigger runs once the repository has been quiet
// for the debounce time, and at the latest 5× that after the first event
// of a burst, so a steady stream of writes cannot hold it back for ever.
// trigger is called from WatchRepoWith's goroutine and should not block
// (a non-blocking send on a buffered channel is the usual shape): the
// daemon's run is level-triggered, a trigger carries nothing but a reason
// for the log.
//
// WatchRepoWith returns nil when ctx ends, or an error when watching
// cannot start (a folder that cannot be watched included) or the watcher
// fails; the caller then falls back to polling.
func WatchRepoWith(ctx context.Context, path string, opts WatchOptions, trigger func(reason string)) error {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	loc, err := findGitDir(path)
	if err != nil {
		return err
	}
	if opts.Worktree && loc.workTree == "" {
		return fmt.Errorf("%s is a bare repository: it has no work tree to watch", path)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	defer w.Close()
	rw := &repoWatcher{w: w, kinds: map[string]watchKind{}, gitDir: loc.gitDir, refuse: opts.refuse}
	if err := rw.add(loc.gitDir, kindGitDir); err != nil {
		return err
	}
	if loc.commonDir != loc.gitDir {
		if err := rw.add(loc.commonDir, kindCommon); err != nil {
			return err
		}
	}
	refs := filepath.Join(loc.commonDir, "refs", "heads")
	walkAll := func() error {
		err := rw.addTree(refs, kindRefs)
		if opts.Worktree {
			err = errors.Join(err, rw.addTree(loc.workTree, kindWorkTree))
		}
		return err
	}
	if err := walkAll(); err != nil {
		return err
	}
	// unwatched deals with a folder that could not be watched once the
	// watch runs: reported, and the watch goes on, or it ends the watch.
	unwatched := func(err error) error {
		if err == nil || opts.OnError == nil {
			return err
		}
		opts.OnError(err)
		return nil
	}

	if opts.watching != nil {
		opts.watching()
	}
	deb := &debouncer{clk: clock.Or(opts.Clock), quiet: opts.Debounce}
	defer deb.stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			r, err := rw.handle(ev)
			if r != "" {
				deb.note(r)
			}
			if opts.handled != nil {
				opts.handled(ev.Name, r)
			}
			if err := unwatched(err); err != nil {
				return err
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost: a folder created meanwhile may be
				// unwatched. Walk again, and run anyway.
				deb.note("file events overflowed")
				if err := unwatched(walkAll()); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("watch %s: %w", path, err)
		case <-deb.C():
			trigger(deb.fired())
		}
	}
}

// debouncer turns a burst of changes into one trigger: it fires once
// there has been no change for quiet, and at the latest 5×quiet after the
// first change of the burst.
type debouncer struct {
	clk     clock.Clock
	quiet   time.Duration
	timer   clock.Timer // nil until the first change
	armed   bool        // a burst is under way
	first   time.Time   // of the burst
	reason  string      // of the burst's first change
	pending int         // changes since the first
}

// note records a change.
func (d *debouncer) note(reason string) {
	now := d.clk.Now()
	if !d.armed {
		d.armed, d.first, d.reason, d.pending = true, now, reason, 0
		if d.timer == nil {
			d.timer = d.clk.NewTimer(d.quiet)
		} else {
			d.timer.Reset(d.quiet)
		}
		return
	}
	d.pending++
	if now.Sub(d.first)+d.quiet <= 5*d.quiet {
		d.timer.Reset(d.quiet) // still quiet-time based; past the cap, let it fire
	}
}

// C delivers when the burst is over; nil (never ready) when there is none.
func (d *debouncer) C() <-chan time.Time {
	if !d.armed {
		return nil
	}
	return d.timer.C()
}

// fired ends the burst and returns its reason.
func (d *debouncer) fired() string {
	d.armed = false
	if d.pending > 0 {
		return fmt.Sprintf("%s (+%d more)", d.reason, d.pending)
	}
	return d.reason
}

func (d *debouncer) stop() {
	if d.timer != nil {
		d.timer.Stop()
	}
}

type repoWatcher struct {
	w      *fsnotify.Watcher
	kinds  map[string]watchKind // watched folder -> kind
	gitDir string
	refuse func(dir string) error // tests: a folder that cannot be watched
}

func (rw *repoWatcher) add(dir string, kind watchKind) error {
	if _, ok := rw.kinds[dir]; ok {
		return nil
	}
	add := rw.w.Add
	if rw.refuse != nil {
		add = func(dir string) error {
			if err := rw.refuse(dir); err != nil {
				return err
			}
			return rw.w.Add(dir)
		}
	}
	if err := add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	rw.kinds[dir] = kind
	return nil
}

// addTree watches dir and every folder below it, skipping .git folders
// in a work tree. A folder that vanishes while walking is not an error:
// its removal is an event of its own. A folder that cannot be read or
// watched does not stop the walk: the others are still watched, and the
// error names every such folder.
func (rw *repoWatcher) addTree(dir string, kind watchKind) error {
	var errs []error
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) || p == dir {
				errs = append(errs, fmt.Errorf("watch %s: %w", p, err))
			}
			return nil // for a folder that cannot be read: skip it
		}
		if !d.IsDir() {
			return nil
		}
		if kind == kindWorkTree && (d.Name() == ".git" || p == rw.gitDir) {
			return filepath.SkipDir
		}
		if err := rw.add(p, kind); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		return nil
	})
	return errors.Join(errs...)
}

// handle returns why the event matters, or "" when it does not, and the
// error of watching a folder the event made.
func (rw *repoWatcher) handle(ev fsnotify.Event) (string, error) {
	if ev.Op == fsnotify.Chmod {
		return "", nil // touch, permission changes: content is the same
	}
	name := filepath.Base(ev.Name)
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		// The kernel drops the watch of a removed folder; forget it so
		// that a folder made again with the same name is watched again.
		delete(rw.kinds, ev.Name)
	}
	kind, ok := rw.kinds[filepath.Dir(ev.Name)]
	if !ok {
		return "", nil
	}
	switch kind {
	case kindGitDir, kindCommon:
		if name == "HEAD" && kind == kindGitDir || name == "packed-refs" {
			return name + " changed", nil
		}
	case kindRefs:
		if strings.HasSuffix(name, ".lock") {
			return "", nil
		}
		var err error
		if ev.Has(fsnotify.Create) && isDir(ev.Name) {
			err = rw.addTree(ev.Name, kindRefs)
		}
		return fmt.Sprintf("branch %q moved", strings.TrimPrefix(filepath.ToSlash(ev.Name), filepath.ToSlash(rw.refsBase(ev.Name)))), err
	case kindWorkTree:
		if name == ".git" || editorScratch(name) {
			return "", nil
		}
		var err error
		if ev.Has(fsnotify.Create) && isDir(ev.Name) {
			err = rw.addTree(ev.Name, kindWorkTree)
		}
		return fmt.Sprintf("%q changed", ev.Name), err // quoted: a file name may hold control characters
	}
	return "", nil
}

// refsBase returns the ".../refs/heads/" prefix of a ref file's path.
func (rw *repoWatcher) refsBase(p string) string {
	p = filepath.ToSlash(p)
	if i := strings.LastIndex(p, "/refs/heads/"); i >= 0 {
		return p[:i+len("/refs/heads/")]
	}
	return ""
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// editorScratch tells the files editors write beside the real one while
// saving (vim's swap files and its 4913 probe, emacs lock and backup
// files): their churn must not trigger runs of its own.
func editorScratch(name string) bool {
	return name == "4913" || strings.HasPrefix(name, ".#") || strings.HasSuffix(name, "~") ||
		strings.HasSuffix(name, ".swp") || strings.HasSuffix(name, ".swx") || strings.HasSuffix(name, ".swpx")
}

// gitLocation is where the parts of a repository live.
type gitLocation struct {
	gitDir    string // HEAD
	commonDir string // refs, packed-refs (differs from gitDir in a linked work tree)
	workTree  string // "" for a bare repository
}

// findGitDir finds the repository at path: a work tree (or a folder in
// one), a linked work tree (.git is a "gitdir:" file), or a bare repository.
func findGitDir(path string) (gitLocation, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return gitLocation{}, err
	}
	if isBareRepo(abs) {
		return gitLocation{gitDir: abs, commonDir: abs}, nil
	}
	for dir := abs; ; {
		dotgit := filepath.Join(dir, ".git")
		if fi, err := os.Stat(dotgit); err == nil {
			loc := gitLocation{gitDir: dotgit, commonDir: dotgit, workTree: dir}
			if !fi.IsDir() {
				b, err := os.ReadFile(dotgit)
				if err != nil {
					return gitLocation{}, err
				}
				g, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir:")
				if !ok {
					return gitLocation{}, fmt.Errorf("%s: not a gitdir file", dotgit)
				}
				loc.gitDir = absFrom(dir, strings.TrimSpace(g))
				loc.commonDir = loc.gitDir
				if c, err := os.ReadFile(filepath.Join(loc.gitDir, "commondir")); err == nil {
					loc.commonDir = absFrom(loc.gitDir, strings.TrimSpace(string(c)))
				}
			}
			return loc, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return gitLocation{}, fmt.Errorf("%s is not a Git repository", path)
		}
		dir = parent
	}
}

func absFrom(base, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(base, p)
}

func isBareRepo(dir string) bool {
	for _, n := range []string{"HEAD", "objects", "refs"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			return false
		}
	}
	return true
}

// WorktreeSnapshot is WorktreeSnapshotContext without a context.
func WorktreeSnapshot(path, dir string) (Snapshot, error) {
	return WorktreeSnapshotContext(context.Background(), path, dir)
}

// WorktreeSnapshotContext reads the YAML files under dir of the folder
// path as they are on disk, uncommitted edits included (the development
// loop). path need not be a Git repository. It stops when ctx ends.
//
// It reads as Repo.SpecFS does, so that disk and Git agree: no symbolic
// link is ever followed, nor a FIFO, device or socket opened. Such an
// entry is kept in the FS with its real type (fs.ModeSymlink, ...), its
// size and no content, for the loader to report; opening it fails with
// ErrSymlink or ErrNotRegular. A regular file is read with O_NOFOLLOW and
// at most MaxSpecFileSize+1 bytes; a bigger one is kept with its size and
// cannot be opened (ErrFileTooLarge). dir must be reached without a link;
// path itself may be one (it is the caller's choice).
//
// Its Files is DirFS of path (the repository root, for provision files).
//
// Its Commit.SHA is "worktree-" and 12 hex digits of a hash over the
// names and contents of those files: the same content always gives the
// same revision, whatever was committed, so saving a file with no real
// change plans nothing, and the value can never be mistaken for a commit.
func WorktreeSnapshotContext(ctx context.Context, path, dir string) (Snapshot, error) {
	base, err := filepath.EvalSymlinks(path)
	if err != nil {
		return Snapshot{}, fmt.Errorf("%q: %w", path, err)
	}
	root := base
	if d := pathpkg.Clean("/" + filepath.ToSlash(dir))[1:]; d != "" {
		for _, part := range strings.Split(d, "/") {
			root = filepath.Join(root, part)
			fi, err := os.Lstat(root)
			switch {
			case err != nil || (!fi.IsDir() && fi.Mode()&fs.ModeSymlink == 0):
				return Snapshot{}, fmt.Errorf("%s: no folder %q", path, dir)
			case fi.Mode()&fs.ModeSymlink != 0:
				return Snapshot{}, fmt.Errorf("%s: spec folder %q: %q %w", path, dir, part, ErrSymlink)
			}
		}
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return Snapshot{}, fmt.Errorf("%s: no folder %q", path, dir)
	}
	files := newSpecFS()
	var names []string
	var newest time.Time
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Name() == ".git" && p != root {
			if filepath.Dir(p) != root {
				// A folder with a .git of its own (a submodule's file or
				// an embedded repository's folder) is another
				// repository: listed as Git lists a submodule, never read.
				rel, err := filepath.Rel(root, p)
				if err != nil {
					return err
				}
				files.add(filepath.ToSlash(rel), submoduleNode())
				names = append(names, filepath.ToSlash(rel))
			}
			// From a file, SkipDir skips the rest of its folder.
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		if !isSpecFile(d.Name()) {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		n, err := readWorktreeEntry(p, d)
		if err != nil {
			return fmt.Errorf("%q: %w", filepath.ToSlash(rel), err)
		}
		name := filepath.ToSlash(rel)
		files.add(name, n)
		names = append(names, name)
		if n.modTime.After(newest) {
			newest = n.modTime
		}
		return nil
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("read %s: %w", root, err)
	}
	sort.Strings(names)
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	for _, name := range names {
		// Length-prefixed, so that no two different sets of files hash alike.
		n := files.files[name]
		put(uint64(len(name)))
		h.Write([]byte(name))
		if n.mode.IsRegular() && n.size <= MaxSpecFileSize {
			put(uint64(len(n.data)))
			h.Write(n.data)
			continue
		}
		// No content: a marker no length can equal, the type and the size.
		put(^uint64(0))
		put(uint64(n.mode.Type()))
		put(uint64(n.size))
	}
	sum := hex.EncodeToString(h.Sum(nil))
	return Snapshot{
		Commit: Commit{SHA: "worktree-" + sum[:12], Subject: "work tree of " + path, When: newest},
		FS:     files,
		// Provision files are read as they are when the specs are loaded.
		Files: DirFS(base),
	}, nil
}

// readWorktreeEntry reads one YAML-named entry of the work tree: the
// content of a regular file (bounded), or only the type and size of
// anything else. The file is opened without following a link and without
// blocking on a FIFO, and checked again once open, since it may have been
// replaced since the folder was listed.
func readWorktreeEntry(p string, d fs.DirEntry) (*specNode, error) {
	info := func() (*specNode, error) {
		fi, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		return &specNode{mode: fi.Mode(), size: fi.Size(), modTime: fi.ModTime()}, nil
	}
	if !d.Type().IsRegular() {
		return info()
	}
	f, err := openNoFollow(p)
	if err != nil {
		if isSymlinkErr(err) {
			return info()
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := &specNode{mode: 0o444, size: fi.Size(), modTime: fi.ModTime()}
	if fi.Mode()&0o111 != 0 {
		n.mode = 0o555
	}
	if !fi.Mode().IsRegular() {
		n.mode = fi.Mode()
		return n, nil
	}
	if fi.Size() > MaxSpecFileSize {
		return n, nil
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSpecFileSize+1))
	if err != nil {
		return nil, err
	}
	n.size = int64(len(data)) // the file may have grown or shrunk since Stat
	if len(data) <= MaxSpecFileSize {
		n.data = data
	}
	return n, nil
}
