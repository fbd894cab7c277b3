package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/berth-gitops/berth/source"
	"github.com/berth-gitops/berth/spec"
)

// loadedSpecs is a spec tree read from a revision or from disk.
type loadedSpecs struct {
	// Commit is the revision read; nil when the files came from disk.
	Commit *source.Commit
	Result *spec.Result
	// prefix is prepended to diagnostic file names so they point at the
	// file as the user would open it.
	prefix string
}

// Revision is the SHA the specs came from, or "worktree".
func (l *loadedSpecs) Revision() string {
	if l.Commit == nil {
		return "worktree"
	}
	return l.Commit.SHA
}

// Diagnostics returns the loader's diagnostics with user-facing file paths.
func (l *loadedSpecs) Diagnostics() spec.Diagnostics {
	out := make(spec.Diagnostics, len(l.Result.Diagnostics))
	for i, d := range l.Result.Diagnostics {
		d.File = path.Join(l.prefix, d.File)
		out[i] = d
	}
	return out
}

// loadFromDisk reads the spec files under location/dir as they are on disk:
// what `berth validate` checks before anything is committed.
func loadFromDisk(ctx context.Context, location, dir string, opts spec.Options) (*loadedSpecs, error) {
	if err := checkSpecDir(location, dir); err != nil {
		return nil, err
	}
	root := filepath.Join(location, dir)
	st, err := os.Lstat(root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
	// Provision files are named from the repository root, and read as on
	// disk with the spec tree's symlink policy.
	opts.Files = source.DirFS(repoRoot(location))
	res, err := spec.LoadDir(ctx, root, opts)
	if err != nil {
		return nil, err
	}
	prefix := filepath.ToSlash(root)
	if prefix == "." {
		prefix = ""
	}
	return &loadedSpecs{Result: res, prefix: prefix}, nil
}

// repoRoot is the root of the Git work tree holding location, which may be
// a spec folder inside it, as the daemon reads provision files from the
// repository's root; location itself when it is in no work tree.
func repoRoot(location string) string {
	abs, err := filepath.Abs(location)
	if err != nil {
		return location
	}
	for p := abs; ; {
		if _, err := os.Lstat(filepath.Join(p, ".git")); err == nil {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return location
		}
		p = parent
	}
}

// checkSpecDir applies the spec tree's symlink policy to the folder itself,
// as for Git objects: --dir is a relative path inside the repository, and
// no component of it (the spec root included) may be a symlink. Otherwise a
// pull request that turns apps/ into a link would have CI read, and echo,
// files from anywhere.
func checkSpecDir(location, dir string) error {
	if dir == "" || dir == "." {
		return nil
	}
	clean := filepath.Clean(dir)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return fmt.Errorf("--dir %q: must be a folder inside the repository", dir)
	}
	p := location
	for _, part := range strings.Split(clean, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("--dir %q: %s is a symlink; berth never follows symlinks in the spec tree", dir, p)
		}
	}
	return nil
}

// loadFromGit reads the spec files under dir at rev from the Git objects of
// the repository at location (a path or a URL).
func loadFromGit(ctx context.Context, repo *source.Repo, rev, dir string, opts spec.Options) (*loadedSpecs, error) {
	c, err := repo.Resolve(rev)
	if err != nil {
		return nil, err
	}
	fsys, err := repo.SpecFS(c.SHA, dir)
	if err != nil {
		return nil, err
	}
	if opts.Files, err = repo.TreeFS(c.SHA); err != nil {
		return nil, err
	}
	res, err := spec.Load(ctx, fsys, opts)
	if err != nil {
		return nil, err
	}
	prefix := path.Clean(filepath.ToSlash(dir))
	if prefix == "." {
		prefix = ""
	}
	return &loadedSpecs{Commit: &c, Result: res, prefix: prefix}, nil
}
