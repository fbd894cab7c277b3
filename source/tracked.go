package source

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/format/gitignore"
)

// maxIgnoreFile bounds what is read of one .gitignore or info/exclude.
const maxIgnoreFile = 1 << 20

// Tracked tells, for files of a Git work tree, whether a commit made from
// it now would hold them. `berth validate` reads a work tree from disk,
// while plan, apply and the daemon read commits: a provision file that is
// ignored or was never added passes the first and fails the others.
//
// It is not safe for concurrent use: .gitignore files are read as paths
// under them are asked about.
type Tracked struct {
	root    string
	tracked map[string]bool
	rules   []ignoreRule
	read    map[string]bool // folders whose .gitignore was read
}

// ignoreRule is one pattern of an ignore file and where it was written,
// to name it as `git check-ignore -v` does.
type ignoreRule struct {
	pattern gitignore.Pattern
	where   string // ".gitignore:3"
	text    string
}

// ReadTracked reads the index of the Git work tree at root (its top
// folder). It returns nil and no error when root is not a Git work tree:
// then there is no commit to miss a file.
func ReadTracked(root string) (*Tracked, error) {
	repo, err := git.PlainOpenWithOptions(root, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", root, err)
	}
	idx, err := repo.Storer.Index()
	if err != nil {
		return nil, fmt.Errorf("%s: read the Git index: %w", root, err)
	}
	t := &Tracked{root: root, tracked: make(map[string]bool, len(idx.Entries)), read: map[string]bool{}}
	for _, e := range idx.Entries {
		t.tracked[e.Name] = true
	}
	// Lowest priority first, as Git: info/exclude, then .gitignore files
	// from the top folder down (read as they are needed).
	t.readIgnoreFile(filepath.Join(commonGitDir(root), "info", "exclude"), ".git/info/exclude", nil)
	return t, nil
}

// commonGitDir is the repository's folder that holds info/exclude: .git,
// or for a linked work tree (whose .git is a file naming its own folder)
// the main repository's, which that folder's commondir file names.
func commonGitDir(root string) string {
	dir := filepath.Join(root, ".git")
	if fi, err := os.Lstat(dir); err != nil || fi.IsDir() {
		return dir
	}
	b, err := os.ReadFile(dir)
	own, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
	if err != nil || !ok {
		return dir
	}
	if !filepath.IsAbs(own) {
		own = filepath.Join(root, own)
	}
	if c, err := os.ReadFile(filepath.Join(own, "commondir")); err == nil {
		common := strings.TrimSpace(string(c))
		if !filepath.IsAbs(common) {
			common = filepath.Join(own, common)
		}
		return common
	}
	return own
}

// readIgnoreFile adds the patterns of one ignore file, if it is a regular
// file (Git does not follow a symlinked .gitignore either).
func (t *Tracked) readIgnoreFile(file, where string, domain []string) {
	fi, err := os.Lstat(file)
	if err != nil || !fi.Mode().IsRegular() {
		return
	}
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIgnoreFile))
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxIgnoreFile)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSuffix(sc.Text(), "\r")
		if strings.HasPrefix(s, "#") || strings.TrimSpace(s) == "" {
			continue
		}
		t.rules = append(t.rules, ignoreRule{gitignore.ParsePattern(s, domain), fmt.Sprintf("%s:%d", where, line), s})
	}
}

// NotInGit says why the file name (slash-separated, relative to the top
// folder) would not be in a commit made now, or "" when Git tracks it.
func (t *Tracked) NotInGit(name string) string {
	if t.tracked[name] {
		return ""
	}
	parts := strings.Split(name, "/")
	for i := range parts {
		if dir := path.Join(parts[:i]...); !t.read[dir] {
			t.read[dir] = true
			t.readIgnoreFile(filepath.Join(t.root, filepath.FromSlash(dir), ".gitignore"), path.Join(dir, ".gitignore"), parts[:i])
		}
	}
	if r := t.ignoredBy(parts); r != nil {
		return fmt.Sprintf("is ignored by Git (%s: %q), so no commit holds it: plan, apply, the daemon and validate --rev will not find it; commit it with git add -f, or stop ignoring it", r.where, r.text)
	}
	return "is not tracked by Git, so no commit holds it yet: plan, apply, the daemon and validate --rev will not find it; git add and commit it"
}

// ignoredBy returns the rule that ignores the file parts, or nil. As in
// Git, a file under an ignored folder is ignored whatever comes after,
// and of the rules that match, the last one decides.
func (t *Tracked) ignoredBy(parts []string) *ignoreRule {
	for i := 1; i <= len(parts); i++ {
		isDir := i < len(parts)
		for j := len(t.rules) - 1; j >= 0; j-- {
			switch t.rules[j].pattern.Match(parts[:i], isDir) {
			case gitignore.Exclude:
				return &t.rules[j]
			case gitignore.Include:
				j = -1 // re-included: look at the next part
			}
		}
	}
	return nil
}
