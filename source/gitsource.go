package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
)

// GitOptions configure a GitSource.
type GitOptions struct {
	// URL is a remote (https://, ssh://, git@host:path, file://) or a
	// local path. A local path is read in place: no clone, no network.
	URL string
	// Branch is followed; default "main".
	Branch string
	// Dir is the spec folder inside the repository ("" = root).
	Dir string
	// CacheDir holds the daemon's clones, one per URL and branch. Default:
	// the user cache dir + "/berth/git".
	CacheDir string
	Auth     Auth
	// Verify, when set, rejects a head not signed by a key of its keyring.
	Verify *Verifier
	Logger *slog.Logger
}

// Snapshot is one revision of the specs.
type Snapshot struct {
	Commit Commit
	// FS is rooted at GitOptions.Dir and holds the YAML files only; see
	// Repo.SpecFS for how it treats symlinks and large files.
	FS fs.FS
	// Files is the whole repository at the same revision, from its root:
	// where provision files are read from (spec.Options.Files). See
	// Repo.TreeFS (a commit) and DirFS (a work tree).
	Files fs.FS
}

// GitSource is the daemon's view of a config repository: a cheap head
// check on every trigger and a fetch only when the head moved.
//
// The clone in CacheDir is the only state, and it is a cache: delete it
// and the next Sync clones again. Two processes must not share one
// CacheDir.
type GitSource struct {
	opts   GitOptions
	remote bool
	auth   transport.AuthMethod
	lister *git.Remote // ls-remote without a repository
	name   string      // URL for messages, without a password
	clone  string      // clone directory (remote only)
	log    *slog.Logger

	mu   sync.Mutex // one Sync at a time: they share the clone
	repo *git.Repository
	last Snapshot // last snapshot returned, reused while the head stays

	polls, fetches atomic.Int64
}

// NewGitSource checks the options and builds credentials (so a missing
// known_hosts file fails at start-up). It does no I/O on the remote.
func NewGitSource(opts GitOptions) (*GitSource, error) {
	if opts.URL == "" {
		return nil, errors.New("git source: no URL or path")
	}
	if opts.Branch == "" {
		opts.Branch = "main"
	}
	if !plumbing.NewBranchReferenceName(opts.Branch).IsBranch() || opts.Branch != filepath.ToSlash(opts.Branch) {
		return nil, fmt.Errorf("git source: bad branch name %q", opts.Branch)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	name := redactURL(opts.URL)
	s := &GitSource{opts: opts, remote: IsRemote(opts.URL), name: name, log: log.With("repo", name, "branch", opts.Branch)}
	if !s.remote {
		// Fail early on a path that is not a repository.
		if _, err := s.openLocal(); err != nil {
			return nil, err
		}
		return s, nil
	}
	auth, err := opts.Auth.Method(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("git source %s: %w", name, err)
	}
	s.auth = auth
	if opts.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("git source: no cache dir given and %w", err)
		}
		opts.CacheDir = filepath.Join(base, "berth", "git")
		s.opts.CacheDir = opts.CacheDir
	}
	// One clone per URL and branch: the clone is single-branch.
	sum := sha256.Sum256([]byte(opts.URL + "\n" + opts.Branch))
	s.clone = filepath.Join(opts.CacheDir, hex.EncodeToString(sum[:])[:16])
	s.lister = git.NewRemote(memory.NewStorage(), &config.RemoteConfig{
		Name: git.DefaultRemoteName,
		URLs: []string{opts.URL},
	})
	return s, nil
}

// Stats returns how many head checks and how many fetches (or clones)
// were made: an idle poll costs one head check and no fetch.
func (s *GitSource) Stats() (polls, fetches int64) {
	return s.polls.Load(), s.fetches.Load()
}

// CloneDir is where the local clone of a remote lives ("" for a local path).
func (s *GitSource) CloneDir() string { return s.clone }

func (s *GitSource) branchRef() plumbing.ReferenceName {
	return plumbing.NewBranchReferenceName(s.opts.Branch)
}

// remoteRef is where the clone keeps the fetched branch: the usual
// remote-tracking name, so that the clone looks like any clone to a
// person who opens it.
func (s *GitSource) remoteRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(git.DefaultRemoteName, s.opts.Branch)
}

// openLocal opens a local repository afresh. It is reopened on every use
// on purpose: go-git caches the list of pack files, and git (gc, push into
// a bare repository) adds and removes packs behind its back.
func (s *GitSource) openLocal() (*git.Repository, error) {
	return openPath(s.opts.URL)
}

// Head returns the SHA the branch points to on the remote, with one
// ls-remote request (no fetch). For a local path it reads the ref from
// the repository. Either way it counts as one poll.
func (s *GitSource) Head(ctx context.Context) (string, error) {
	s.polls.Add(1)
	if !s.remote {
		r, err := s.openLocal()
		if err != nil {
			return "", err
		}
		ref, err := r.Reference(s.branchRef(), true)
		if err != nil {
			return "", fmt.Errorf("%s: branch %q: %w", s.name, s.opts.Branch, err)
		}
		return ref.Hash().String(), nil
	}
	refs, err := s.lister.ListContext(ctx, &git.ListOptions{Auth: s.auth})
	if err != nil {
		return "", fmt.Errorf("ls-remote %s: %w", s.name, err)
	}
	want := s.branchRef()
	for _, r := range refs {
		if r.Name() == want && r.Type() == plumbing.HashReference {
			return r.Hash().String(), nil
		}
	}
	return "", fmt.Errorf("%s has no branch %q", s.name, s.opts.Branch)
}

// Sync checks the head and fetches only when the clone does not have it
// yet (the first call clones). It returns the snapshot of the branch
// head, and fetched=true when a fetch or clone happened.
//
// With a Verifier, a head that is not signed by a trusted key yields an
// *UnverifiedError and no snapshot.
func (s *GitSource) Sync(ctx context.Context) (Snapshot, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	head, err := s.Head(ctx)
	if err != nil {
		return Snapshot{}, false, err
	}
	var (
		repo    *git.Repository
		fetched bool
	)
	if s.remote {
		repo, fetched, err = s.update(ctx, head)
		if err != nil {
			return Snapshot{}, fetched, err
		}
		// The clone's ref, not head: a push between the head check and
		// the fetch gives a newer commit, and that is what we have.
		ref, err := repo.Reference(s.remoteRef(), true)
		if err != nil {
			return Snapshot{}, fetched, fmt.Errorf("clone of %s: %w", s.name, err)
		}
		head = ref.Hash().String()
	} else {
		if repo, err = s.openLocal(); err != nil {
			return Snapshot{}, false, err
		}
	}
	if s.last.FS != nil && s.last.Commit.SHA == head {
		return s.last, fetched, nil
	}
	snap, err := s.snapshot(repo, head)
	if err != nil {
		return Snapshot{}, fetched, err
	}
	s.last = snap
	s.log.Info("new revision", "sha", snap.Commit.Short(), "subject", snap.Commit.Subject, "fetched", fetched)
	return snap, fetched, nil
}

func (s *GitSource) snapshot(repo *git.Repository, sha string) (Snapshot, error) {
	c, err := repo.CommitObject(plumbing.NewHash(sha))
	if err != nil {
		return Snapshot{}, fmt.Errorf("%s: commit %s: %w", s.name, shortSHA(sha), err)
	}
	if s.opts.Verify != nil {
		if err := s.opts.Verify.VerifyCommit(c); err != nil {
			return Snapshot{}, &UnverifiedError{SHA: sha, Reason: err.Error()}
		}
	}
	// The snapshot's files are read when the loader opens them, through a
	// repository opened for the snapshot alone (a fetch into the clone
	// meanwhile does not share its caches), and opened again if a read
	// fails because git gc or a fresh clone replaced the pack files.
	reopen := s.openLocal
	if s.remote {
		reopen = func() (*git.Repository, error) { return git.PlainOpen(s.clone) }
	}
	own, err := reopen()
	if err != nil {
		return Snapshot{}, fmt.Errorf("%s: %w", s.name, err)
	}
	// One reader for both: they share the repository opened above.
	br := &blobReader{repo: own, reopen: reopen}
	fsys, err := specFSAt(br, s.name, sha, s.opts.Dir)
	if err != nil {
		return Snapshot{}, err
	}
	files, err := treeFSAt(br, s.name, sha)
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Commit: commitOf(c), FS: fsys, Files: files}, nil
}

// update makes sure the clone holds head: it opens (or clones) the clone
// and fetches when its ref differs.
func (s *GitSource) update(ctx context.Context, head string) (*git.Repository, bool, error) {
	if s.repo == nil {
		if r, err := git.PlainOpen(s.clone); err == nil {
			if _, err := r.Reference(s.remoteRef(), true); err == nil {
				s.repo = r // the clone a previous process left
			} else {
				s.log.Warn("discarding unusable clone", "dir", s.clone, "err", err)
			}
		}
		if s.repo == nil {
			// None yet, or one cut short: start again.
			if err := os.RemoveAll(s.clone); err != nil {
				return nil, false, err
			}
			if err := s.cloneRepo(ctx); err != nil {
				return nil, true, err
			}
			return s.repo, true, nil
		}
	}
	ref, err := s.repo.Reference(s.remoteRef(), true)
	if err == nil && ref.Hash().String() == head {
		return s.repo, false, nil
	}
	if err := s.fetch(ctx); err != nil {
		return nil, true, err
	}
	// A fetch that leaves the head unreadable means a broken clone (an
	// interrupted write, a shallow-history mishap): re-clone once rather
	// than fail on every poll until a person deletes the cache.
	if ref, err := s.repo.Reference(s.remoteRef(), true); err == nil {
		if _, err := s.repo.CommitObject(ref.Hash()); err == nil {
			return s.repo, true, nil
		}
	}
	s.log.Warn("clone is broken after fetch; cloning again", "dir", s.clone)
	s.repo = nil
	if err := os.RemoveAll(s.clone); err != nil {
		return nil, true, err
	}
	if err := s.cloneRepo(ctx); err != nil {
		return nil, true, err
	}
	return s.repo, true, nil
}

func (s *GitSource) refSpec() config.RefSpec {
	// Forced (+): a force-push or a branch reset on the remote is followed.
	return config.RefSpec(fmt.Sprintf("+%s:%s", s.branchRef(), s.remoteRef()))
}

func (s *GitSource) cloneRepo(ctx context.Context) error {
	s.fetches.Add(1)
	if err := os.MkdirAll(filepath.Dir(s.clone), 0o700); err != nil {
		return err
	}
	s.log.Debug("cloning", "dir", s.clone)
	// A bare, single-branch, shallow clone: the daemon reads the tip only.
	opts := &git.CloneOptions{
		URL:           s.opts.URL,
		Auth:          s.auth,
		ReferenceName: s.branchRef(),
		SingleBranch:  true,
		Tags:          git.NoTags,
		Depth:         1,
	}
	r, err := git.PlainCloneContext(ctx, s.clone, true, opts)
	if err != nil && ctx.Err() == nil && !isFinal(err) {
		// A server without shallow support: a full clone works everywhere.
		s.log.Warn("shallow clone failed; cloning the full history", "err", err)
		_ = os.RemoveAll(s.clone)
		opts.Depth = 0
		r, err = git.PlainCloneContext(ctx, s.clone, true, opts)
	}
	if err != nil {
		_ = os.RemoveAll(s.clone) // no half clone left for the next try
		return fmt.Errorf("clone %s: %w", s.name, err)
	}
	s.repo = r
	return nil
}

// isFinal tells errors that another try with other options cannot fix.
func isFinal(err error) bool {
	return errors.Is(err, transport.ErrAuthenticationRequired) ||
		errors.Is(err, transport.ErrAuthorizationFailed) ||
		errors.Is(err, transport.ErrRepositoryNotFound) ||
		errors.Is(err, transport.ErrEmptyRemoteRepository)
}

// fetch brings the branch up to date. A shallow clone fetches with depth
// 1 again, and that matters beyond size: go-git fetching without a depth
// into a shallow clone after the branch was reset to an older commit
// updates the ref but not the objects ("object not found",
// go-git/go-git#1443); with depth 1 the server sends the tip it points to.
func (s *GitSource) fetch(ctx context.Context) error {
	s.fetches.Add(1)
	s.log.Debug("fetching", "dir", s.clone)
	depth := 0
	if sh, err := s.repo.Storer.Shallow(); err == nil && len(sh) > 0 {
		depth = 1
	}
	err := s.repo.FetchContext(ctx, &git.FetchOptions{
		RemoteName: git.DefaultRemoteName,
		RemoteURL:  s.opts.URL, // the URL given now wins over the clone's config
		RefSpecs:   []config.RefSpec{s.refSpec()},
		Auth:       s.auth,
		Tags:       git.NoTags,
		Force:      true,
		Depth:      depth,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch %s: %w", s.name, err)
	}
	return nil
}

// redactURL hides a password written into a URL (https://user:pw@host/),
// which would otherwise end up in logs and status output.
func redactURL(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}
