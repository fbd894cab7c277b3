package source

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// RevertOptions say what `berth rollback` undoes. Exactly one of To and
// Commits is set.
type RevertOptions struct {
	// To makes one commit whose tree is the tree of this revision (an
	// ancestor of HEAD): everything since is undone at once.
	To string
	// Commits are reverted one by one, newest first, one revert commit
	// each, as `git revert` does.
	Commits []string
	// Author; when empty, user.name/user.email from the Git config, then
	// $GIT_AUTHOR_NAME/$GIT_AUTHOR_EMAIL.
	AuthorName, AuthorEmail string
	// Push pushes the branch to its upstream remote (branch.<b>.remote,
	// else Remote, else "origin") once the commits are made.
	Push   bool
	Auth   Auth
	Remote string
}

// entry is one file of a flattened tree.
type entry struct {
	hash plumbing.Hash
	mode filemode.FileMode
}

// plannedCommit is a revert commit computed but not written yet.
type plannedCommit struct {
	files   map[string]entry // nil when tree is set
	tree    plumbing.Hash
	message string
}

// Revert undoes commits on the branch checked out at repoPath with new
// commits (history is never rewritten, so a pushed branch stays
// fast-forward and the undo is itself reviewable and revertable).
//
// go-git has no `git revert`, so the inverse of each commit's diff is
// applied here, file by file: a file the commit changed must still be as
// that commit left it, or the revert does not apply cleanly and nothing
// is written. Merge commits are refused (which parent's side to undo is
// a person's call); --to handles them, since it copies a whole tree.
//
// The work tree must be clean (untracked files are fine unless the
// revert would overwrite one). Afterwards the index and the work tree
// match the new HEAD. A bare repository gets the commits only.
//
// reverted lists the commits undone. With Push, a push failure is
// returned along with the new head: the commits exist locally.
func Revert(ctx context.Context, repoPath string, opts RevertOptions) (newHead Commit, reverted []Commit, err error) {
	if (opts.To == "") == (len(opts.Commits) == 0) {
		return Commit{}, nil, errors.New("revert: give either a revision to roll back to or the commits to revert")
	}
	repo, err := openPath(repoPath)
	if err != nil {
		return Commit{}, nil, err
	}
	branch, ref, head, err := checkedOutBranch(repo, repoPath)
	if err != nil {
		return Commit{}, nil, err
	}
	author, err := revertAuthor(repo, opts)
	if err != nil {
		return Commit{}, nil, err
	}
	wt, untracked, err := cleanWorktree(repo)
	if err != nil {
		return Commit{}, nil, err
	}
	plan, reverted, err := planRevert(repo, head, opts)
	if err != nil {
		return Commit{}, nil, err
	}

	// Everything is known to apply. Before anything is written, check
	// that the work tree can take the result: the ref moves only if the
	// files can follow.
	headFiles, err := flatten(head)
	if err != nil {
		return Commit{}, nil, err
	}
	newFiles, err := plannedResult(repo, plan)
	if err != nil {
		return Commit{}, nil, err
	}
	if wt != nil {
		if err := checkWorktree(wt.Filesystem.Root(), headFiles, newFiles, untracked); err != nil {
			return Commit{}, nil, fmt.Errorf("%w; nothing was changed", err)
		}
	}
	last, err := writeCommits(repo, head.Hash, plan, author)
	if err != nil {
		return Commit{}, nil, err
	}
	// Compare-and-swap: a commit made meanwhile (by a person, or by git
	// running beside us) is not silently dropped.
	moved := plumbing.NewHashReference(branch, last.Hash)
	if err := repo.Storer.CheckAndSetReference(moved, ref); err != nil {
		return Commit{}, nil, fmt.Errorf("update %q: %w; nothing was changed", branch.Short(), err)
	}
	newHead = commitOf(last)
	if wt != nil {
		if err := syncWorktree(repo, wt, last.Hash, headFiles, newFiles); err != nil {
			// All or nothing: the files are back as they were; put the
			// branch (and with it HEAD and the index) back too.
			if uerr := restoreBranch(repo, wt, ref, moved); uerr != nil {
				return newHead, reverted, fmt.Errorf("updating the work tree failed: %w; and moving %q back to %s failed too: %v: the branch is at %s, run `git reset --hard %s` to finish or `git reset --hard %s` to undo",
					err, branch.Short(), shortSHA(ref.Hash().String()), uerr, newHead.Short(), newHead.Short(), shortSHA(ref.Hash().String()))
			}
			return Commit{}, nil, fmt.Errorf("updating the work tree failed: %w; nothing was changed (the branch, the index and the files are as they were)", err)
		}
	}
	if opts.Push {
		if err := pushBranch(ctx, repo, branch, opts); err != nil {
			return newHead, reverted, err
		}
	}
	return newHead, reverted, nil
}

// checkedOutBranch is the branch HEAD points to, its reference as read
// now (the compare-and-swap at the end compares against it) and its
// commit. A detached HEAD is refused: there is no branch to add the
// commits to.
func checkedOutBranch(repo *git.Repository, repoPath string) (plumbing.ReferenceName, *plumbing.Reference, *object.Commit, error) {
	headRef, err := repo.Reference(plumbing.HEAD, false)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: %w", repoPath, err)
	}
	if headRef.Type() != plumbing.SymbolicReference || !headRef.Target().IsBranch() {
		return "", nil, nil, fmt.Errorf("%s: HEAD is detached; check out the branch to roll back", repoPath)
	}
	branch := headRef.Target()
	ref, err := repo.Reference(branch, true)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: branch %q has no commits: %w", repoPath, branch.Short(), err)
	}
	head, err := repo.CommitObject(ref.Hash())
	if err != nil {
		return "", nil, nil, err
	}
	return branch, ref, head, nil
}

// cleanWorktree is the repository's work tree, refused when it has
// changes to tracked files, and its untracked paths. A bare repository
// has none: nil, and the revert writes the commits only.
func cleanWorktree(repo *git.Repository) (*git.Worktree, map[string]bool, error) {
	wt, err := repo.Worktree()
	if errors.Is(err, git.ErrIsBareRepository) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, err
	}
	untracked, err := checkClean(wt)
	if err != nil {
		return nil, nil, err
	}
	return wt, untracked, nil
}

// planRevert plans the commits opts asks for: one rollback commit with
// To, else one revert per commit.
func planRevert(repo *git.Repository, head *object.Commit, opts RevertOptions) ([]plannedCommit, []Commit, error) {
	if opts.To != "" {
		return planRollbackTo(repo, head, opts.To)
	}
	return planReverts(repo, head, opts.Commits)
}

// plannedResult is the files of the last planned commit: what the branch
// holds once every commit is made.
func plannedResult(repo *git.Repository, plan []plannedCommit) (map[string]entry, error) {
	last := plan[len(plan)-1]
	if last.files != nil {
		return last.files, nil
	}
	return flattenTree(repo, last.tree)
}

// writeCommits writes the planned commits as a chain on parent and
// returns the last. Only objects are written: no reference moves, so a
// failure here leaves the branch as it was.
func writeCommits(repo *git.Repository, parent plumbing.Hash, plan []plannedCommit, author object.Signature) (*object.Commit, error) {
	var last *object.Commit
	for _, p := range plan {
		var err error
		tree := p.tree
		if p.files != nil {
			if tree, err = writeTree(repo.Storer, p.files); err != nil {
				return nil, fmt.Errorf("write tree: %w", err)
			}
		}
		sig := object.Signature{Name: author.Name, Email: author.Email, When: author.When}
		c := &object.Commit{
			Author:       sig,
			Committer:    sig,
			Message:      p.message,
			TreeHash:     tree,
			ParentHashes: []plumbing.Hash{parent},
		}
		obj := repo.Storer.NewEncodedObject()
		if err = c.Encode(obj); err != nil {
			return nil, err
		}
		if parent, err = repo.Storer.SetEncodedObject(obj); err != nil {
			return nil, fmt.Errorf("write commit: %w", err)
		}
		if last, err = repo.CommitObject(parent); err != nil {
			return nil, err
		}
	}
	return last, nil
}

// revertAuthor picks the author: options, then Git config (local, global,
// system), then the environment.
func revertAuthor(repo *git.Repository, opts RevertOptions) (object.Signature, error) {
	name, email := opts.AuthorName, opts.AuthorEmail
	cfg, err := repo.ConfigScoped(config.SystemScope)
	if err != nil {
		cfg, err = repo.Config() // a broken global file must not stop a rollback
	}
	if err == nil {
		if name == "" {
			name = cfg.User.Name
		}
		if email == "" {
			email = cfg.User.Email
		}
	}
	if name == "" {
		name = os.Getenv("GIT_AUTHOR_NAME")
	}
	if email == "" {
		email = os.Getenv("GIT_AUTHOR_EMAIL")
	}
	if name == "" || email == "" {
		return object.Signature{}, errors.New("revert: no author: pass a name and email, or set user.name and user.email in the Git config")
	}
	return object.Signature{Name: name, Email: email, When: time.Now()}, nil
}

// checkClean refuses a work tree with changes to tracked files and
// returns the untracked paths.
func checkClean(wt *git.Worktree) (map[string]bool, error) {
	st, err := wt.Status()
	if err != nil {
		return nil, fmt.Errorf("work tree status: %w", err)
	}
	untracked := map[string]bool{}
	var dirty []string
	for p, fs := range st {
		if fs.Staging == git.Untracked && fs.Worktree == git.Untracked {
			untracked[p] = true
			continue
		}
		if fs.Staging != git.Unmodified || fs.Worktree != git.Unmodified {
			dirty = append(dirty, p)
		}
	}
	if len(dirty) > 0 {
		sort.Strings(dirty)
		if len(dirty) > 5 {
			dirty = append(dirty[:5], "...")
		}
		return nil, fmt.Errorf("the work tree has uncommitted changes (%s): commit or stash them first", quoteList(dirty))
	}
	return untracked, nil
}

// quoteList quotes each name (a file name may hold a newline or an
// escape sequence, which must not reach a terminal raw) and joins them.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		if n == "..." {
			q[i] = n
			continue
		}
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// planRollbackTo plans one commit that gives HEAD the tree of rev.
func planRollbackTo(repo *git.Repository, head *object.Commit, rev string) ([]plannedCommit, []Commit, error) {
	target, err := resolveCommit(repo, rev, "", "this repository")
	if err != nil {
		return nil, nil, err
	}
	if target.Hash == head.Hash {
		return nil, nil, fmt.Errorf("nothing to roll back: %q is HEAD", rev)
	}
	if ok, err := target.IsAncestor(head); err != nil || !ok {
		return nil, nil, fmt.Errorf("%q (%s) is not an earlier commit of this branch", rev, shortSHA(target.Hash.String()))
	}
	if target.TreeHash == head.TreeHash {
		return nil, nil, fmt.Errorf("nothing to roll back: HEAD already has the files of %s", shortSHA(target.Hash.String()))
	}
	// The commits undone: reachable from HEAD but not from the target.
	keep := map[plumbing.Hash]bool{}
	err = object.NewCommitPreorderIter(target, nil, nil).ForEach(func(c *object.Commit) error {
		keep[c.Hash] = true
		return nil
	})
	if err != nil && !errors.Is(err, plumbing.ErrObjectNotFound) { // shallow history ends somewhere
		return nil, nil, err
	}
	var reverted []Commit
	err = object.NewCommitPreorderIter(head, keep, nil).ForEach(func(c *object.Commit) error {
		reverted = append(reverted, commitOf(c))
		return nil
	})
	if err != nil && !errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, nil, err
	}
	tc := commitOf(target)
	var msg strings.Builder
	fmt.Fprintf(&msg, "Roll back to %s (%s)\n\nThis reverts the changes of:\n", tc.Short(), tc.Subject)
	for _, c := range reverted {
		fmt.Fprintf(&msg, "  %s %s\n", c.Short(), c.Subject)
	}
	return []plannedCommit{{tree: target.TreeHash, message: msg.String()}}, reverted, nil
}

// planReverts plans one revert commit per commit, newest first, each
// applied on the result of the one before.
func planReverts(repo *git.Repository, head *object.Commit, revs []string) ([]plannedCommit, []Commit, error) {
	commits, err := revertsNewestFirst(repo, head, revs)
	if err != nil {
		return nil, nil, err
	}
	cur, err := flatten(head)
	if err != nil {
		return nil, nil, err
	}
	var plan []plannedCommit
	var reverted []Commit
	for _, c := range commits {
		next, err := planRevertOf(c, cur)
		if err != nil {
			return nil, nil, err
		}
		cc := commitOf(c)
		plan = append(plan, plannedCommit{
			files:   next,
			message: fmt.Sprintf("Revert %q\n\nThis reverts commit %s.\n", cc.Subject, cc.SHA),
		})
		reverted = append(reverted, cc)
		cur = next
	}
	return plan, reverted, nil
}

// revertsNewestFirst resolves the commits to revert, once each, newest
// first: each revert then applies on a tree where the later commits are
// already undone, as `git revert` of a range does. Only commits of this
// branch (reverting a commit from elsewhere is not a rollback) and no
// merges.
func revertsNewestFirst(repo *git.Repository, head *object.Commit, revs []string) ([]*object.Commit, error) {
	// Position in the history from HEAD: newest first.
	pos := map[plumbing.Hash]int{}
	n := 0
	err := object.NewCommitPreorderIter(head, nil, nil).ForEach(func(c *object.Commit) error {
		pos[c.Hash] = n
		n++
		return nil
	})
	if err != nil && !errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, err
	}
	var commits []*object.Commit
	seen := map[plumbing.Hash]bool{}
	for _, rev := range revs {
		c, err := resolveCommit(repo, rev, "", "this repository")
		if err != nil {
			return nil, err
		}
		if _, ok := pos[c.Hash]; !ok {
			return nil, fmt.Errorf("%q (%s) is not a commit of this branch", rev, shortSHA(c.Hash.String()))
		}
		if c.NumParents() > 1 {
			return nil, fmt.Errorf("%q (%s) is a merge commit: revert it by hand, or roll back to a revision with --to", rev, shortSHA(c.Hash.String()))
		}
		if !seen[c.Hash] {
			seen[c.Hash] = true
			commits = append(commits, c)
		}
	}
	sort.Slice(commits, func(i, j int) bool { return pos[commits[i].Hash] < pos[commits[j].Hash] })
	return commits, nil
}

// planRevertOf is the files once c is undone on cur. It fails, naming
// the paths, when a file c changed has changed again since, when c has
// nothing left to undo, or when the result would not check out.
func planRevertOf(c *object.Commit, cur map[string]entry) (map[string]entry, error) {
	after, err := flatten(c)
	if err != nil {
		return nil, err
	}
	before, err := parentFiles(c)
	if err != nil {
		return nil, err
	}
	next, changed, conflicts := undoChanges(cur, before, after)
	cc := commitOf(c)
	if len(conflicts) > 0 {
		sort.Strings(conflicts)
		return nil, fmt.Errorf("revert of %s (%q) does not apply cleanly: changed since: %s; nothing was written",
			cc.Short(), cc.Subject, quoteList(conflicts))
	}
	if changed == 0 {
		return nil, fmt.Errorf("%s (%q) changes nothing that is still there: already reverted?", cc.Short(), cc.Subject)
	}
	// A dir/file clash (a file where the result needs a folder) would
	// make a tree git cannot check out: refuse it like a conflict.
	if p := pathClash(next); p != "" {
		return nil, fmt.Errorf("revert of %s (%q) does not apply cleanly: %q is both a file and a folder", cc.Short(), cc.Subject, p)
	}
	return next, nil
}

// parentFiles is the files before c: its parent's, none for a root
// commit (merges are refused before this).
func parentFiles(c *object.Commit) (map[string]entry, error) {
	if c.NumParents() != 1 {
		return map[string]entry{}, nil
	}
	p, err := c.Parent(0)
	if err != nil {
		return nil, fmt.Errorf("parent of %s: %w", shortSHA(c.Hash.String()), err)
	}
	return flatten(p)
}

// undoChanges applies the inverse of a commit's diff (before -> after) to
// cur, path by path. A path still as the commit left it goes back to
// before; one already as before is left; any other is a conflict.
// changed counts the paths undone; cur itself is not modified.
func undoChanges(cur, before, after map[string]entry) (next map[string]entry, changed int, conflicts []string) {
	next = make(map[string]entry, len(cur))
	for k, v := range cur {
		next[k] = v
	}
	for p := range changedPaths(before, after) {
		now, hasNow := cur[p]
		was, hadWas := after[p]    // as the commit left it
		orig, hadOrig := before[p] // as it was before the commit
		switch {
		case hasNow == hadWas && now == was:
			// Untouched since: undo.
			if hadOrig {
				next[p] = orig
			} else {
				delete(next, p)
			}
			changed++
		case hasNow == hadOrig && now == orig:
			// Already as before the commit: nothing to undo here.
		default:
			conflicts = append(conflicts, p)
		}
	}
	return next, changed, conflicts
}

// flatten lists every non-tree entry (files, symlinks, submodules) of a
// commit's tree by full path.
func flatten(c *object.Commit) (map[string]entry, error) {
	t, err := c.Tree()
	if err != nil {
		return nil, fmt.Errorf("tree of %s: %w", shortSHA(c.Hash.String()), err)
	}
	return flattenEntries(t, c.Hash)
}

// flattenTree is flatten for a tree object.
func flattenTree(repo *git.Repository, h plumbing.Hash) (map[string]entry, error) {
	t, err := repo.TreeObject(h)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", shortSHA(h.String()), err)
	}
	return flattenEntries(t, h)
}

func flattenEntries(t *object.Tree, of plumbing.Hash) (map[string]entry, error) {
	out := map[string]entry{}
	w := object.NewTreeWalker(t, true, nil)
	defer w.Close()
	for {
		name, e, err := w.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("tree of %s: %w", shortSHA(of.String()), err)
		}
		if e.Mode == filemode.Dir {
			continue
		}
		out[name] = entry{hash: e.Hash, mode: e.Mode}
	}
}

// changedPaths returns the paths whose entry differs between a and b.
func changedPaths(a, b map[string]entry) map[string]bool {
	out := map[string]bool{}
	for p, e := range a {
		if f, ok := b[p]; !ok || f != e {
			out[p] = true
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out[p] = true
		}
	}
	return out
}

func pathClash(files map[string]entry) string {
	for p := range files {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := files[d]; ok {
				return d
			}
		}
	}
	return ""
}

// writeTree stores the tree objects for a flat file list and returns
// the root tree's hash.
func writeTree(s storer.EncodedObjectStorer, files map[string]entry) (plumbing.Hash, error) {
	type dir struct {
		files map[string]entry
		dirs  map[string]*dir
	}
	newDir := func() *dir { return &dir{files: map[string]entry{}, dirs: map[string]*dir{}} }
	root := newDir()
	for p, e := range files {
		d := root
		parts := strings.Split(p, "/")
		for _, part := range parts[:len(parts)-1] {
			sub, ok := d.dirs[part]
			if !ok {
				sub = newDir()
				d.dirs[part] = sub
			}
			d = sub
		}
		d.files[parts[len(parts)-1]] = e
	}
	var write func(d *dir) (plumbing.Hash, error)
	write = func(d *dir) (plumbing.Hash, error) {
		var t object.Tree
		for name, e := range d.files {
			t.Entries = append(t.Entries, object.TreeEntry{Name: name, Mode: e.mode, Hash: e.hash})
		}
		for name, sub := range d.dirs {
			h, err := write(sub)
			if err != nil {
				return plumbing.ZeroHash, err
			}
			t.Entries = append(t.Entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
		}
		// Git's order: by name, a folder sorting as if its name ended in
		// "/". Another order gives a tree that git fsck rejects.
		key := func(e object.TreeEntry) string {
			if e.Mode == filemode.Dir {
				return e.Name + "/"
			}
			return e.Name
		}
		sort.Slice(t.Entries, func(i, j int) bool { return key(t.Entries[i]) < key(t.Entries[j]) })
		obj := s.NewEncodedObject()
		if err := t.Encode(obj); err != nil {
			return plumbing.ZeroHash, err
		}
		return s.SetEncodedObject(obj)
	}
	return write(root)
}

// checkWorktree checks, before anything is written, that the work tree
// can go from oldFiles to newFiles: nothing untracked or ignored in the
// way of a file to write, no file or link where a folder must be made
// (a link would be written through, perhaps out of the repository), and
// the folders to change writable.
func checkWorktree(root string, oldFiles, newFiles map[string]entry, untracked map[string]bool) error {
	changed := changedPaths(oldFiles, newFiles)
	deleted := map[string]bool{}
	for p := range changed {
		if _, ok := newFiles[p]; !ok {
			deleted[p] = true
		}
	}
	paths := make([]string, 0, len(changed))
	for p := range changed {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	checkedDirs := map[string]bool{}
	for _, p := range paths {
		full := filepath.Join(root, filepath.FromSlash(p))
		// Every folder above it must be a folder (not a link, which would
		// be written or deleted through), or not exist yet.
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(d)))
			if notExist(err) || err == nil && deleted[d] {
				continue // made, or removed first
			}
			if err != nil {
				return err
			}
			if fi.Mode()&fs.ModeSymlink != 0 {
				return fmt.Errorf("%q is a symbolic link, and the rollback would change %q through it; move it away first", d, p)
			}
			if !fi.IsDir() {
				return fmt.Errorf("%q is a file on disk, and the rollback needs a folder there for %q; move it away first", d, p)
			}
		}
		if e, ok := newFiles[p]; ok && e.mode != filemode.Submodule {
			if untracked[p] {
				return fmt.Errorf("untracked file %q would be overwritten by the rollback; move it away first", p)
			}
			if fi, err := os.Lstat(full); err == nil {
				_, tracked := oldFiles[p]
				switch {
				case fi.IsDir() && !onlyDeleted(root, p, deleted):
					return fmt.Errorf("%q is a folder on disk, and the rollback needs a file there; move it away first", p)
				case !fi.IsDir() && !tracked:
					return fmt.Errorf("%q (untracked or ignored) would be overwritten by the rollback; move it away first", p)
				}
			} else if !notExist(err) {
				return err
			}
		}
		// The folder where the entry is removed or made must be writable
		// (the nearest one that exists).
		d := filepath.Dir(full)
		for !checkedDirs[d] {
			checkedDirs[d] = true
			if _, err := os.Lstat(d); err == nil {
				if err := writableDir(d); err != nil {
					rel, _ := filepath.Rel(root, d)
					return fmt.Errorf("folder %q is not writable: %w", filepath.ToSlash(rel), err)
				}
				break
			}
			if d == root || !strings.HasPrefix(d, root) {
				break
			}
			d = filepath.Dir(d)
		}
	}
	return nil
}

// notExist tells an error of Lstat on a path that is not there,
// including one below a file (ENOTDIR).
func notExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// onlyDeleted tells whether the folder p holds nothing but tracked files
// that the rollback deletes (so that it goes away before a file takes
// its place).
func onlyDeleted(root, p string, deleted map[string]bool) bool {
	ok := true
	_ = filepath.WalkDir(filepath.Join(root, filepath.FromSlash(p)), func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			ok = false
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, q)
		if err != nil || !deleted[filepath.ToSlash(rel)] {
			ok = false
			return filepath.SkipAll
		}
		return nil
	})
	return ok
}

// testHookWorktree, when set, runs before each change syncWorktree
// makes to a file ("remove" or "write"); an error fails the change.
var testHookWorktree func(op, path string) error

// syncWorktree makes the files and the index match the new commit: the
// files that changed are written here, so that nothing else in the work
// tree is touched, then the index comes from go-git's mixed reset. If
// any of it fails, the files touched so far are put back as in oldFiles
// (the work tree was clean: they were exactly that) and the error is
// returned.
func syncWorktree(repo *git.Repository, wt *git.Worktree, commit plumbing.Hash, oldFiles, newFiles map[string]entry) (err error) {
	root := wt.Filesystem.Root()
	changed := changedPaths(oldFiles, newFiles)
	paths := make([]string, 0, len(changed))
	for p := range changed {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	// The folders that exist now: undoing removes the others it made.
	existed := map[string]bool{}
	for _, p := range paths {
		for d := filepath.Dir(filepath.Join(root, filepath.FromSlash(p))); strings.HasPrefix(d, root) && d != root; d = filepath.Dir(d) {
			if _, ok := existed[d]; ok {
				break
			}
			_, serr := os.Lstat(d)
			existed[d] = serr == nil
		}
	}
	var touched []string
	defer func() {
		if err != nil {
			if uerr := undoWorktree(repo, root, touched, oldFiles, existed); uerr != nil {
				err = fmt.Errorf("%w; putting the files back failed too: %v", err, uerr)
			}
		}
	}()
	// Deletions first: a file may make way for a folder of the same name.
	for _, p := range paths {
		if _, ok := newFiles[p]; ok {
			continue
		}
		touched = append(touched, p)
		if testHookWorktree != nil {
			if err := testHookWorktree("remove", p); err != nil {
				return fmt.Errorf("remove %q: %w", p, err)
			}
		}
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %q: %w", p, err)
		}
		// Like git, drop the folders that the removal left empty.
		for d := filepath.Dir(full); d != root && strings.HasPrefix(d, root); d = filepath.Dir(d) {
			if os.Remove(d) != nil {
				break
			}
		}
	}
	for _, p := range paths {
		e, ok := newFiles[p]
		if !ok || e.mode == filemode.Submodule {
			continue
		}
		touched = append(touched, p)
		if testHookWorktree != nil {
			if err := testHookWorktree("write", p); err != nil {
				return fmt.Errorf("write %q: %w", p, err)
			}
		}
		if err := writeWorktreeFile(repo, filepath.Join(root, filepath.FromSlash(p)), e); err != nil {
			return fmt.Errorf("write %q: %w", p, err)
		}
	}
	if err := wt.Reset(&git.ResetOptions{Commit: commit, Mode: git.MixedReset}); err != nil {
		return fmt.Errorf("update the index: %w", err)
	}
	return nil
}

// undoWorktree puts the paths touched back as in oldFiles, and removes
// the folders made since (those not in existed) if they are empty.
func undoWorktree(repo *git.Repository, root string, touched []string, oldFiles map[string]entry, existed map[string]bool) error {
	var errs []error
	for i := len(touched) - 1; i >= 0; i-- {
		p := touched[i]
		full := filepath.Join(root, filepath.FromSlash(p))
		if e, ok := oldFiles[p]; ok {
			if e.mode == filemode.Submodule {
				continue
			}
			if err := writeWorktreeFile(repo, full, e); err != nil {
				errs = append(errs, fmt.Errorf("restore %q: %w", p, err))
			}
			continue
		}
		if err := os.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %q: %w", p, err))
		}
	}
	// Deepest first, so that a parent is empty once its children are gone.
	var made []string
	for d, ok := range existed {
		if !ok {
			made = append(made, d)
		}
	}
	sort.Slice(made, func(i, j int) bool { return len(made[i]) > len(made[j]) })
	for _, d := range made {
		_ = os.Remove(d) // only if empty
	}
	return errors.Join(errs...)
}

// restoreBranch moves the branch back from moved to old (compare and
// swap, so a commit made meanwhile is not dropped) and resets the index
// to it.
func restoreBranch(repo *git.Repository, wt *git.Worktree, old, moved *plumbing.Reference) error {
	if err := repo.Storer.CheckAndSetReference(old, moved); err != nil {
		return err
	}
	// go-git's reset also sets the branch: to old, where it is now.
	return wt.Reset(&git.ResetOptions{Commit: old.Hash(), Mode: git.MixedReset})
}

func writeWorktreeFile(repo *git.Repository, full string, e entry) error {
	blob, err := repo.BlobObject(e.hash)
	if err != nil {
		return err
	}
	rd, err := blob.Reader()
	if err != nil {
		return err
	}
	defer rd.Close()
	data, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o777); err != nil {
		return err
	}
	// Replace rather than write through: the old entry may be a symlink
	// or have another mode.
	if err := os.Remove(full); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if e.mode == filemode.Symlink {
		return os.Symlink(string(data), full)
	}
	perm := os.FileMode(0o666) // less the umask, as git does
	if e.mode == filemode.Executable {
		perm = 0o777
	}
	return os.WriteFile(full, data, perm)
}

// pushBranch pushes branch to its upstream: the remote and branch from
// branch.<name>.remote/merge, unless opts.Remote names another remote.
func pushBranch(ctx context.Context, repo *git.Repository, branch plumbing.ReferenceName, opts RevertOptions) error {
	cfg, err := repo.Config()
	if err != nil {
		return err
	}
	remote, dst := opts.Remote, branch
	if b, ok := cfg.Branches[branch.Short()]; ok && b.Remote != "" && b.Remote != "." && (remote == "" || remote == b.Remote) {
		remote = b.Remote
		if b.Merge.IsBranch() {
			dst = b.Merge
		}
	}
	if remote == "" {
		remote = git.DefaultRemoteName
	}
	rc, ok := cfg.Remotes[remote]
	if !ok || len(rc.URLs) == 0 {
		return fmt.Errorf("rollback committed locally, but there is no remote %q to push to", remote)
	}
	auth, err := opts.Auth.Method(rc.URLs[0])
	if err != nil {
		return fmt.Errorf("rollback committed locally, but push to %s: %w", remote, err)
	}
	err = repo.PushContext(ctx, &git.PushOptions{
		RemoteName: remote,
		RefSpecs:   []config.RefSpec{config.RefSpec(branch.String() + ":" + dst.String())},
		Auth:       auth,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("rollback committed locally, but push to %s (%s) failed: %w", remote, dst.Short(), err)
	}
	return nil
}
