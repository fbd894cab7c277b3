// Package source reads app specs out of Git: it opens a repository (a
// local path or a URL), resolves revisions, and serves the spec root of a
// revision straight from the Git objects — no checkout, so the work tree a
// person is editing is never touched and two revisions can be read side by
// side (berth diff).
//
// For the daemon, GitSource follows a branch with a cheap head check and
// fetches only when the head moved (optionally refusing heads that are not
// signed by a trusted key); WatchRepo turns commits in a local repository,
// or saved files in its work tree, into triggers; WorktreeSnapshot reads
// the specs as they are on disk. Revert is `berth rollback`: it undoes
// commits with new commits, as `git revert` would. See README.md.
package source

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

// ErrRevisionNotFound is returned when a revision does not name a commit.
var ErrRevisionNotFound = errors.New("revision not found")

// Repo is an opened Git repository.
type Repo struct {
	// Location is what the repository was opened from: a path or a URL.
	Location string
	repo     *git.Repository
	// reopen opens the repository again (a local path): a spec FS uses it
	// when a read fails because git gc replaced the pack files.
	reopen func() (*git.Repository, error)
}

// Commit describes a resolved revision.
type Commit struct {
	SHA     string    `json:"sha"`
	Subject string    `json:"subject"`
	Author  string    `json:"author"`
	When    time.Time `json:"when"`
}

// Short is the abbreviated SHA people read in output.
func (c Commit) Short() string {
	if len(c.SHA) > 12 {
		return c.SHA[:12]
	}
	return c.SHA
}

// IsRemote tells whether location names a remote repository rather than
// a local path. The rule is git's (url_is_local_not_ssh in connect.c, and
// the existence check of git clone):
//
//  1. "SCHEME://..." with a scheme of letters, digits, '+', '-' and '.'
//     (starting with a letter or digit) is a URL, file:// included.
//  2. Otherwise a location with no colon, or with a slash (or backslash)
//     before its first colon, is a local path: ./apps:v2, /tmp/apps:v2,
//     apps/x:y. So is a Windows drive path (C:\x, C:/x).
//  3. Otherwise it has the scp-like form [user@]host:path of an SSH
//     address, and is remote, unless a file or folder of that name
//     exists (it is then read, as git clone does), or the part before
//     the colon cannot be a host (empty, or holding characters other
//     than letters, digits, '.', '-', '_', or a [bracketed] address).
//
// So "apps:v2" is a local path when it exists and an SSH address when
// not; "./apps:v2" is always a local path.
func IsRemote(location string) bool {
	if isURL(location) {
		return true
	}
	_, _, ok := scpLike(location)
	if !ok {
		return false
	}
	_, err := os.Stat(location)
	return err != nil
}

// isURL tells "SCHEME://...", as git's is_url does.
func isURL(s string) bool {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return false
	}
	for i, r := range scheme {
		alnum := 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("+-.", r)) {
			return false
		}
	}
	return true
}

// scpLike splits "[user@]host:path" into host and path; ok is false for
// anything else (rules 2 and 3 of IsRemote, without the existence check).
// The host may be a [bracketed] address, whose colons do not count.
func scpLike(s string) (host, p string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || strings.ContainsAny(s[:i], "/\\") {
		return "", "", false
	}
	if i == 1 && len(s) > 2 && (s[2] == '\\' || s[2] == '/') && ('a' <= s[0]|0x20 && s[0]|0x20 <= 'z') {
		return "", "", false // C:\x
	}
	start := strings.LastIndexByte(s[:i], '@') + 1
	if start == 1 {
		return "", "", false // "@host:" has an empty user
	}
	if s[start] == '[' {
		end := strings.IndexByte(s[start:], ']') + start
		if end <= start+1 || end+1 >= len(s) || s[end+1] != ':' || strings.ContainsAny(s[:end], "/\\") {
			return "", "", false
		}
		return s[start : end+1], s[end+2:], true
	}
	host = s[start:i]
	if host == "" {
		return "", "", false
	}
	for _, r := range host {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '-' || r == '_') {
			return "", "", false
		}
	}
	return host, s[i+1:], true
}

// Open opens the repository at location. A local path may be a work tree
// (any folder inside it) or a bare repository. A URL is cloned into memory:
// fine for the small config repos berth reads; the daemon keeps a clone on
// disk instead.
func Open(ctx context.Context, location string) (*Repo, error) {
	if IsRemote(location) {
		r, err := git.CloneContext(ctx, memory.NewStorage(), nil, &git.CloneOptions{
			URL:        location,
			NoCheckout: true,
			Tags:       git.AllTags,
		})
		if err != nil {
			if host, p, ok := scpLike(location); ok && !isURL(location) {
				return nil, fmt.Errorf("clone %q (read as the SSH address host %q, path %q; for a local path write ./%s): %w", location, host, p, location, err)
			}
			return nil, fmt.Errorf("clone %s: %w", redactURL(location), err)
		}
		return &Repo{Location: location, repo: r}, nil
	}
	r, err := openPath(location)
	if err != nil {
		return nil, err
	}
	return &Repo{Location: location, repo: r, reopen: func() (*git.Repository, error) { return openPath(location) }}, nil
}

// openPath opens the repository at a local path: a bare repository, a
// work tree, or any folder inside one. The bare case comes first because
// go-git's DetectDotGit looks for a .git folder only, up to the root, and
// so never finds a bare repository.
func openPath(p string) (*git.Repository, error) {
	// DetectDotGit walks up from a path that does not exist as from one
	// that does: a typo would silently read the enclosing repository.
	if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s is not a Git repository: the path does not exist", p)
	} else if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	r, err := git.PlainOpen(p)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		r, err = git.PlainOpenWithOptions(p, &git.PlainOpenOptions{DetectDotGit: true})
	}
	if err != nil {
		if errors.Is(err, git.ErrRepositoryNotExists) {
			return nil, fmt.Errorf("%s is not a Git repository", p)
		}
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	return r, nil
}

// Resolve turns a revision into a commit: a branch, tag or other ref
// (origin/main, refs/tags/v1, HEAD), a SHA or a prefix of at least 4 hex
// digits, followed by ~N, ^N, ^{commit} or ^{}. Branches of a cloned URL
// live under refs/remotes/origin, so a name found nowhere else is also
// tried as origin/NAME.
//
// What berth cannot resolve exactly is refused, never resolved to another
// commit: an ambiguous name or SHA prefix (ErrRevisionAmbiguous, naming
// the candidates), reflog and upstream syntax @{...}, REV:PATH, :/TEXT,
// ^{/TEXT}, ^{tree} and the like, ranges (ErrRevisionUnsupported). A
// revision that names nothing is ErrRevisionNotFound.
func (r *Repo) Resolve(rev string) (Commit, error) {
	c, err := resolveCommit(r.repo, rev, git.DefaultRemoteName, redactURL(r.Location))
	if err != nil {
		return Commit{}, err
	}
	return commitOf(c), nil
}

func commitOf(c *object.Commit) Commit {
	subject, _, _ := strings.Cut(c.Message, "\n")
	return Commit{SHA: c.Hash.String(), Subject: subject, Author: c.Author.Name, When: c.Author.When}
}

// SpecFS returns the YAML files under dir (slash-separated, "" or "." for
// the root) of the commit sha, read from the Git objects, as an fs.FS rooted
// at dir. Only *.yaml and *.yml entries are listed: a config repo may hold
// anything else, and spec.Load reads nothing but those.
//
// The FS never follows a link: a committed symlink is listed with
// fs.ModeSymlink in Stat and ReadDir and cannot be opened (ErrSymlink),
// exactly as the same link on disk, so both give the loader the same
// answer. Stat reports a file's size from the object header, and a file
// over MaxSpecFileSize cannot be opened (ErrFileTooLarge). Contents are
// read from the objects when a file is opened, not here.
func (r *Repo) SpecFS(sha, dir string) (fs.FS, error) {
	return specFSAt(&blobReader{repo: r.repo, reopen: r.reopen}, redactURL(r.Location), sha, dir)
}

func specFSAt(br *blobReader, where, sha, dir string) (fs.FS, error) {
	c, err := br.repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRevisionNotFound, shortSHA(sha), err)
	}
	tree, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("read tree of %s: %w", shortSHA(sha), err)
	}
	dir = path.Clean(strings.Trim(filepath.ToSlash(dir), "/"))
	if dir != "." && dir != "" {
		if e, err := tree.FindEntry(dir); err == nil && e.Mode != filemode.Dir {
			if e.Mode == filemode.Symlink {
				return nil, fmt.Errorf("%s: spec folder %q at revision %s %w", where, dir, shortSHA(sha), ErrSymlink)
			}
			return nil, fmt.Errorf("%s: %q at revision %s is not a folder", where, dir, shortSHA(sha))
		}
		sub, err := tree.Tree(dir)
		if err != nil {
			if errors.Is(err, object.ErrDirectoryNotFound) {
				return nil, fmt.Errorf("%s: no folder %q at revision %s", where, dir, shortSHA(sha))
			}
			return nil, fmt.Errorf("read %q at %s: %w", dir, shortSHA(sha), err)
		}
		tree = sub
	}
	fsys, err := treeSpecFS(tree, br)
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", where, shortSHA(sha), err)
	}
	return fsys, nil
}

func isSpecFile(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}
