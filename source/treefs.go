package source

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// MaxTreeFileSize is the largest file a TreeFS serves: 4 MiB. A bigger one
// is listed with its size but cannot be opened. It matches the spec
// loader's limit on provision files (spec.MaxProvisionFileSize).
const MaxTreeFileSize = 4 << 20

// ErrTreeFileTooLarge is the error for opening a file of a TreeFS over
// MaxTreeFileSize.
var ErrTreeFileTooLarge = fmt.Errorf("is larger than the %d MiB limit for a file read from the repository", MaxTreeFileSize>>20)

// TreeFS returns the whole tree of the commit sha, from the repository
// root, read from the Git objects: what provision files
// (system.provision.files[].source) are read from, at the revision of the
// specs. SpecFS, by contrast, holds the spec folder's YAML files only.
//
// It follows the spec FS's rules on links: a committed symlink is listed
// with fs.ModeSymlink in ReadDir and Stat and cannot be opened
// (ErrSymlink), and a path through a linked folder does not exist. A
// submodule is listed as fs.ModeIrregular and cannot be opened
// (ErrNotRegular). Stat and DirEntry.Info give a file's size from the
// object header; a file over MaxTreeFileSize cannot be opened
// (ErrTreeFileTooLarge). Folders and files are read when asked for, so
// listing the tree costs nothing up front, whatever the repository's size.
func (r *Repo) TreeFS(sha string) (fs.FS, error) {
	return treeFSAt(&blobReader{repo: r.repo, reopen: r.reopen}, redactURL(r.Location), sha)
}

func treeFSAt(br *blobReader, where, sha string) (fs.FS, error) {
	c, err := br.repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRevisionNotFound, shortSHA(sha), err)
	}
	t := &treeFS{root: c.TreeHash, br: br, trees: map[plumbing.Hash]*object.Tree{}}
	if _, err := t.tree(c.TreeHash); err != nil {
		return nil, fmt.Errorf("%s: read tree of %s: %w", where, shortSHA(sha), err)
	}
	return t, nil
}

// treeFS is the fs.FS of Repo.TreeFS.
type treeFS struct {
	root plumbing.Hash
	br   *blobReader

	mu    sync.Mutex
	trees map[plumbing.Hash]*object.Tree // decoded folders
}

// tree reads a folder's tree object once.
func (t *treeFS) tree(h plumbing.Hash) (*object.Tree, error) {
	t.mu.Lock()
	tr, ok := t.trees[h]
	t.mu.Unlock()
	if ok {
		return tr, nil
	}
	err := t.br.withRepo(func(repo *git.Repository) error {
		var err error
		tr, err = repo.TreeObject(h)
		return err
	})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.trees[h] = tr
	t.mu.Unlock()
	return tr, nil
}

// find returns the entry of name ("." is the root folder), walking down
// folder by folder: a part that is not a folder (a symlink among them)
// ends the walk with fs.ErrNotExist, so no link is ever followed.
func (t *treeFS) find(op, name string) (object.TreeEntry, error) {
	if !fs.ValidPath(name) {
		return object.TreeEntry{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	e := object.TreeEntry{Name: ".", Mode: filemode.Dir, Hash: t.root}
	if name == "." {
		return e, nil
	}
	for _, part := range strings.Split(name, "/") {
		if e.Mode != filemode.Dir {
			return object.TreeEntry{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		tr, err := t.tree(e.Hash)
		if err != nil {
			return object.TreeEntry{}, &fs.PathError{Op: op, Path: name, Err: err}
		}
		found := false
		for _, c := range tr.Entries {
			if c.Name == part {
				e, found = c, true
				break
			}
		}
		if !found {
			return object.TreeEntry{}, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
	}
	return e, nil
}

// info describes an entry; a blob's size is read from its object header.
func (t *treeFS) info(e object.TreeEntry) (fs.FileInfo, error) {
	fi := &treeInfo{name: e.Name, mode: treeMode(e.Mode)}
	if e.Mode == filemode.Dir || e.Mode == filemode.Submodule {
		return fi, nil
	}
	err := t.br.withRepo(func(repo *git.Repository) error {
		var err error
		fi.size, err = objectSize(repo.Storer, e.Hash)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "stat", Path: e.Name, Err: err}
	}
	return fi, nil
}

// treeMode is the fs.FileMode of a Git tree entry mode, as specFS gives.
func treeMode(m filemode.FileMode) fs.FileMode {
	switch m {
	case filemode.Dir:
		return fs.ModeDir | 0o555
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	case filemode.Executable:
		return 0o555
	case filemode.Regular, filemode.Deprecated:
		return 0o444
	}
	return fs.ModeIrregular | 0o444 // a submodule: not a file of this repository
}

func (t *treeFS) Stat(name string) (fs.FileInfo, error) {
	e, err := t.find("stat", name)
	if err != nil {
		return nil, err
	}
	fi, err := t.info(e)
	if err != nil {
		return nil, err
	}
	fi.(*treeInfo).name = path.Base(name)
	return fi, nil
}

func (t *treeFS) ReadDir(name string) ([]fs.DirEntry, error) {
	e, err := t.find("readdir", name)
	if err != nil {
		return nil, err
	}
	if e.Mode != filemode.Dir {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errors.New("not a directory")}
	}
	tr, err := t.tree(e.Hash)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	// Git sorts a folder's entries with folders as if they ended in "/";
	// fs.ReadDir promises plain name order.
	out := make([]fs.DirEntry, 0, len(tr.Entries))
	for _, c := range tr.Entries {
		out = append(out, &treeDirEntry{t: t, e: c})
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

func (t *treeFS) ReadFile(name string) ([]byte, error) {
	e, err := t.find("read", name)
	if err != nil {
		return nil, err
	}
	return t.content("read", name, e)
}

func (t *treeFS) content(op, name string, e object.TreeEntry) ([]byte, error) {
	switch {
	case e.Mode == filemode.Symlink:
		return nil, &fs.PathError{Op: op, Path: name, Err: ErrSymlink}
	case e.Mode == filemode.Dir:
		return nil, &fs.PathError{Op: op, Path: name, Err: errors.New("is a directory")}
	case !treeMode(e.Mode).IsRegular():
		return nil, &fs.PathError{Op: op, Path: name, Err: ErrNotRegular}
	}
	data, err := t.br.readLimit(e.Hash, MaxTreeFileSize, ErrTreeFileTooLarge)
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	return data, nil
}

func (t *treeFS) Open(name string) (fs.File, error) {
	e, err := t.find("open", name)
	if err != nil {
		return nil, err
	}
	fi, err := t.info(e)
	if err != nil {
		return nil, err
	}
	fi.(*treeInfo).name = path.Base(name)
	if e.Mode == filemode.Dir {
		entries, err := t.ReadDir(name)
		if err != nil {
			return nil, err
		}
		return &specDir{info: fi, entries: entries}, nil
	}
	data, err := t.content("open", name, e)
	if err != nil {
		return nil, err
	}
	return &specFile{info: fi, Reader: bytes.NewReader(data)}, nil
}

type treeDirEntry struct {
	t *treeFS
	e object.TreeEntry
}

func (d *treeDirEntry) Name() string               { return d.e.Name }
func (d *treeDirEntry) IsDir() bool                { return d.e.Mode == filemode.Dir }
func (d *treeDirEntry) Type() fs.FileMode          { return treeMode(d.e.Mode).Type() }
func (d *treeDirEntry) Info() (fs.FileInfo, error) { return d.t.info(d.e) }

type treeInfo struct {
	name string
	mode fs.FileMode
	size int64
}

func (i *treeInfo) Name() string       { return i.name }
func (i *treeInfo) Size() int64        { return i.size }
func (i *treeInfo) Mode() fs.FileMode  { return i.mode }
func (i *treeInfo) ModTime() time.Time { return time.Time{} }
func (i *treeInfo) IsDir() bool        { return i.mode.IsDir() }
func (i *treeInfo) Sys() any           { return nil }

// DirFS returns the files under dir on disk as an fs.FS that never
// follows a symbolic link, unlike os.DirFS: the work-tree counterpart of
// TreeFS. Stat is os.Lstat and ReadDir reports links with fs.ModeSymlink;
// Open of a link fails with ErrSymlink, and of a FIFO, device or socket
// with ErrNotRegular, without blocking. A linked folder in the middle of
// a path is the caller's to refuse, from ReadDir (as spec.Load does).
func DirFS(dir string) fs.FS { return diskFS(dir) }

type diskFS string

func (d diskFS) path(op, name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	return filepath.Join(string(d), filepath.FromSlash(name)), nil
}

func (d diskFS) Stat(name string) (fs.FileInfo, error) {
	p, err := d.path("stat", name)
	if err != nil {
		return nil, err
	}
	return os.Lstat(p)
}

func (d diskFS) ReadDir(name string) ([]fs.DirEntry, error) {
	p, err := d.path("readdir", name)
	if err != nil {
		return nil, err
	}
	return os.ReadDir(p)
}

func (d diskFS) Open(name string) (fs.File, error) {
	p, err := d.path("open", name)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(p)
	switch {
	case err != nil:
		return nil, err
	case fi.IsDir():
		return os.Open(p)
	case fi.Mode()&fs.ModeSymlink != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrSymlink}
	case !fi.Mode().IsRegular():
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotRegular}
	}
	f, err := openNoFollow(p)
	if err != nil {
		if isSymlinkErr(err) {
			return nil, &fs.PathError{Op: "open", Path: name, Err: ErrSymlink}
		}
		return nil, err
	}
	// It may have been replaced since the Lstat.
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = ErrNotRegular
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return f, nil
}
