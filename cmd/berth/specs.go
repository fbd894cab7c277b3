package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"

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
	root := filepath.Join(location, dir)
	st, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", root)
	}
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
