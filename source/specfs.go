package source

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// MaxSpecFileSize is the largest spec file served: a bigger one is listed
// (its size shows in Stat) but cannot be opened. It matches the spec
// loader's limit (spec.MaxFileSize); source does not import spec.
const MaxSpecFileSize = 1 << 20

var (
	// ErrSymlink is the error for opening a symbolic link: berth never
	// follows links in a spec tree, on disk or in Git, and never reads
	// their target.
	ErrSymlink = errors.New("is a symbolic link; berth does not follow links in the spec tree")
	// ErrNotRegular is the error for opening a FIFO, a device, a socket or
	// a submodule.
	ErrNotRegular = errors.New("is not a regular file")
	// ErrFileTooLarge is the error for opening a file over MaxSpecFileSize.
	ErrFileTooLarge = fmt.Errorf("is larger than the %d MiB limit for a spec file", MaxSpecFileSize>>20)
)

// specFS is the read-only fs.FS of a spec tree that Repo.SpecFS,
// GitSource and WorktreeSnapshot return. It holds the YAML-named entries
// of the tree with their real type, never following a link:
//
//   - Stat and ReadDir report a symlink as fs.ModeSymlink (and a FIFO,
//     device or socket with its own type), and a regular file with its
//     size, so a loader can refuse an entry without opening it;
//   - Open and ReadFile of anything but a regular file fail (ErrSymlink,
//     ErrNotRegular), and so do they for a file over MaxSpecFileSize
//     (ErrFileTooLarge): the target of a link is never read, nor shown.
//
// Git blobs are read when opened, at most MaxSpecFileSize+1 bytes each,
// so a loader that checks its context between files can stop a large
// tree part way.
type specFS struct {
	files map[string]*specNode
	dirs  map[string]map[string]bool // folder ("." = root) -> child names
}

type specNode struct {
	mode    fs.FileMode
	size    int64
	modTime time.Time
	data    []byte                 // content read already (work tree)
	read    func() ([]byte, error) // reads the content (Git blob)
}

func newSpecFS() *specFS {
	return &specFS{files: map[string]*specNode{}, dirs: map[string]map[string]bool{".": {}}}
}

// add puts the entry name (a valid, slash-separated path) in the tree.
func (f *specFS) add(name string, n *specNode) {
	f.files[name] = n
	for child := name; child != "."; {
		dir := path.Dir(child)
		if f.dirs[dir] == nil {
			f.dirs[dir] = map[string]bool{}
		}
		f.dirs[dir][path.Base(child)] = true
		child = dir
	}
}

func (f *specFS) Stat(name string) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrInvalid}
	}
	if n, ok := f.files[name]; ok {
		return &specInfo{name: path.Base(name), n: n}, nil
	}
	if _, ok := f.dirs[name]; ok {
		return &specInfo{name: path.Base(name), dir: true}, nil
	}
	return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
}

func (f *specFS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrInvalid}
	}
	children, ok := f.dirs[name]
	if !ok {
		if _, isFile := f.files[name]; isFile {
			return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	}
	names := make([]string, 0, len(children))
	for c := range children {
		names = append(names, c)
	}
	sort.Strings(names)
	out := make([]fs.DirEntry, 0, len(names))
	for _, c := range names {
		full := path.Join(name, c)
		info, err := f.Stat(full)
		if err != nil {
			return nil, err
		}
		out = append(out, fs.FileInfoToDirEntry(info))
	}
	return out, nil
}

// content returns the bytes of a regular file, or why it has none.
func (f *specFS) content(op, name string) (*specNode, []byte, error) {
	n, ok := f.files[name]
	if !ok {
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
	}
	switch {
	case n.mode&fs.ModeSymlink != 0:
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: ErrSymlink}
	case !n.mode.IsRegular():
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: ErrNotRegular}
	case n.size > MaxSpecFileSize:
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: ErrFileTooLarge}
	}
	if n.read == nil {
		return n, n.data, nil
	}
	data, err := n.read()
	if err != nil {
		return nil, nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return n, data, nil
}

func (f *specFS) ReadFile(name string) ([]byte, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fs.ErrInvalid}
	}
	_, data, err := f.content("read", name)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(data), nil
}

func (f *specFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if _, ok := f.dirs[name]; ok {
		entries, err := f.ReadDir(name)
		if err != nil {
			return nil, err
		}
		return &specDir{info: &specInfo{name: path.Base(name), dir: true}, entries: entries}, nil
	}
	n, data, err := f.content("open", name)
	if err != nil {
		return nil, err
	}
	return &specFile{info: &specInfo{name: path.Base(name), n: n}, Reader: bytes.NewReader(data)}, nil
}

// Sub returns the tree under dir as a specFS of its own, so that fs.Sub
// keeps Stat (which does not follow links) rather than falling back to
// Open.
func (f *specFS) Sub(dir string) (fs.FS, error) {
	if !fs.ValidPath(dir) {
		return nil, &fs.PathError{Op: "sub", Path: dir, Err: fs.ErrInvalid}
	}
	if dir == "." {
		return f, nil
	}
	if _, ok := f.dirs[dir]; !ok {
		if _, isFile := f.files[dir]; isFile {
			return nil, &fs.PathError{Op: "sub", Path: dir, Err: errors.New("not a directory")}
		}
		return nil, &fs.PathError{Op: "sub", Path: dir, Err: fs.ErrNotExist}
	}
	out := newSpecFS()
	prefix := dir + "/"
	for name, n := range f.files {
		if rest, ok := strings.CutPrefix(name, prefix); ok {
			out.add(rest, n)
		}
	}
	return out, nil
}

type specInfo struct {
	name string
	dir  bool
	n    *specNode
}

func (i *specInfo) Name() string { return i.name }
func (i *specInfo) Size() int64 {
	if i.dir {
		return 0
	}
	return i.n.size
}
func (i *specInfo) Mode() fs.FileMode {
	if i.dir {
		return fs.ModeDir | 0o555
	}
	return i.n.mode
}
func (i *specInfo) ModTime() time.Time {
	if i.dir {
		return time.Time{}
	}
	return i.n.modTime
}
func (i *specInfo) IsDir() bool { return i.dir }
func (i *specInfo) Sys() any    { return nil }

type specFile struct {
	info fs.FileInfo
	*bytes.Reader
}

func (f *specFile) Stat() (fs.FileInfo, error) { return f.info, nil }
func (f *specFile) Close() error               { return nil }

type specDir struct {
	info    fs.FileInfo
	entries []fs.DirEntry
	off     int
}

func (d *specDir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *specDir) Close() error               { return nil }
func (d *specDir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.Name(), Err: errors.New("is a directory")}
}

func (d *specDir) ReadDir(count int) ([]fs.DirEntry, error) {
	rest := d.entries[d.off:]
	if count <= 0 {
		d.off = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	if count > len(rest) {
		count = len(rest)
	}
	d.off += count
	return rest[:count], nil
}

// blobReader reads the blobs of a spec FS from a repository. The
// repository is opened again when a read fails, once: `git gc` may have
// replaced the pack files that the first one knew about.
type blobReader struct {
	mu     sync.Mutex
	repo   *git.Repository
	reopen func() (*git.Repository, error) // nil: never reopened
}

func (b *blobReader) read(h plumbing.Hash) ([]byte, error) {
	return b.readLimit(h, MaxSpecFileSize, ErrFileTooLarge)
}

// readLimit reads a blob of at most limit bytes, or fails with tooLarge.
func (b *blobReader) readLimit(h plumbing.Hash, limit int64, tooLarge error) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, err := readBlob(b.repo, h, limit, tooLarge)
	if err != nil && b.reopen != nil && !errors.Is(err, tooLarge) {
		if r, rerr := b.reopen(); rerr == nil {
			b.repo = r
			data, err = readBlob(r, h, limit, tooLarge)
		}
	}
	return data, err
}

// withRepo runs f with the repository, and once more with the repository
// opened again when it fails: git gc may have replaced the pack files.
func (b *blobReader) withRepo(f func(*git.Repository) error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := f(b.repo)
	if err != nil && b.reopen != nil {
		if r, rerr := b.reopen(); rerr == nil {
			b.repo = r
			err = f(r)
		}
	}
	return err
}

// readBlob reads a blob of at most limit bytes: its size is checked from
// the object header first, and the read is bounded too.
func readBlob(repo *git.Repository, h plumbing.Hash, limit int64, tooLarge error) ([]byte, error) {
	if size, err := objectSize(repo.Storer, h); err != nil {
		return nil, err
	} else if size > limit {
		return nil, tooLarge
	}
	obj, err := repo.Storer.EncodedObject(plumbing.BlobObject, h)
	if err != nil {
		return nil, err
	}
	rd, err := obj.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	data, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, tooLarge
	}
	return data, nil
}

// SubmoduleMarker is the entry a spec FS lists inside a folder that is
// another repository: a Git submodule (a gitlink, mode 160000) or, on
// disk, a folder with a .git of its own. It stands for that .git, as an
// fs.ModeIrregular file that cannot be opened, so that a loader sees the
// same thing in a commit and in a work tree and can refuse the folder
// (whose files a commit does not hold) rather than read or skip it.
const SubmoduleMarker = ".git"

// submoduleNode is the node of a SubmoduleMarker.
func submoduleNode() *specNode { return &specNode{mode: fs.ModeIrregular | 0o444} }

// treeSpecFS lists the YAML-named entries of tree into a specFS whose
// regular files are read from the repository when opened. A symlink
// (mode 120000) is listed as fs.ModeSymlink, with the length of its
// target as its size and no content; a submodule is listed as a folder
// holding only a SubmoduleMarker.
func treeSpecFS(tree *object.Tree, br *blobReader) (*specFS, error) {
	out := newSpecFS()
	w := object.NewTreeWalker(tree, true, nil)
	// The names never reach a file system (the specs are read from the
	// objects, and every message escapes them): a name go-git would refuse
	// to check out, such as one with a control character, is one file's
	// business, as on disk, not a reason to refuse the whole revision.
	w.SkipPathValidation()
	defer w.Close()
	for {
		name, e, err := w.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read tree: %w", err)
		}
		if e.Mode == filemode.Submodule && fs.ValidPath(name) {
			out.add(name+"/"+SubmoduleMarker, submoduleNode())
			continue
		}
		if e.Mode == filemode.Dir || e.Mode == filemode.Submodule || !isSpecFile(name) {
			continue
		}
		if !fs.ValidPath(name) {
			// On disk such a name is one entry's problem, but a spec FS
			// cannot hold a path it cannot name: refusing the revision
			// loses no app and prunes nothing.
			return nil, fmt.Errorf("the tree holds a spec file whose path %q is not valid UTF-8 (or has an empty, \".\" or \"..\" part), and berth reads files by UTF-8 names only; rename it", name)
		}
		size, err := objectSize(br.repo.Storer, e.Hash)
		if err != nil {
			return nil, fmt.Errorf("read %q: %w", name, err)
		}
		n := &specNode{size: size}
		switch e.Mode {
		case filemode.Symlink:
			n.mode = fs.ModeSymlink | 0o777
		case filemode.Executable:
			n.mode = 0o555
		case filemode.Regular, filemode.Deprecated:
			n.mode = 0o444
		default:
			n.mode = fs.ModeIrregular | 0o444
		}
		if n.mode.IsRegular() {
			h := e.Hash
			n.read = func() ([]byte, error) { return br.read(h) }
		}
		out.add(name, n)
	}
}
