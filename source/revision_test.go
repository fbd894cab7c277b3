package source

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// revHistory makes three commits on main, an annotated tag v1 on the
// first, and a reflog with several entries (HEAD@{2} exists).
func revHistory(t *testing.T) (g *gitRepo, first, second, third string) {
	g = newGitRepo(t)
	g.write("apps/web.yaml", "v1\n")
	first = g.commit("first")
	g.run("tag", "-a", "-m", "release one", "v1")
	g.write("apps/web.yaml", "v2\n")
	second = g.commit("second")
	g.write("apps/web.yaml", "v3\n")
	third = g.commit("third")
	g.run("checkout", "-q", "-b", "side", first)
	g.run("checkout", "-q", "main")
	return g, first, second, third
}

func TestResolveMatchesGit(t *testing.T) {
	g, first, _, _ := revHistory(t)
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{
		"HEAD", "@", "main", "HEAD~", "HEAD~0", "HEAD^0", "HEAD^^", "HEAD~2", "main~1^{commit}~1",
		"HEAD^{commit}", "HEAD^{}", "v1", "v1^{}", "v1^{commit}", "v1~0", "tags/v1", "refs/tags/v1",
		"heads/main", "refs/heads/main", "side", first, first[:7], strings.ToUpper(first[:10]),
	} {
		want := g.run("rev-parse", "--verify", "--end-of-options", rev+"^{commit}")
		c, err := r.Resolve(rev)
		if err != nil {
			t.Errorf("Resolve(%q): %v (git: %s)", rev, err, want)
			continue
		}
		if c.SHA != want {
			t.Errorf("Resolve(%q) = %s, git says %s", rev, c.SHA, want)
		}
	}
	if c, err := r.Resolve(""); err != nil || c.SHA != g.run("rev-parse", "HEAD") {
		t.Errorf(`Resolve("") = %v, %v`, c.SHA, err)
	}
}

// HEAD@{2}, HEAD:path, HEAD^{blob} and the like used to resolve as HEAD.
func TestResolveRefusesWhatItCannotResolveExactly(t *testing.T) {
	g, _, _, _ := revHistory(t)
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	g.run("rev-parse", "--verify", "HEAD@{2}") // the reflog entry exists
	for _, rev := range []string{
		"HEAD@{2}", "HEAD@{99}", "@{1}", "@{-1}", "main@{u}", "main@{upstream}", "HEAD@{yesterday}", "main@{push}",
		"HEAD:apps/web.yaml", "HEAD:", ":/first", ":0:apps/web.yaml",
		"HEAD^{blob}", "HEAD^{tree}", "HEAD^{tag}", "HEAD^{object}", "HEAD^{/first}",
		"HEAD~1..HEAD", "HEAD...side", "^HEAD", "HEAD^!", "HEAD^@", "HEAD^-", "~1",
	} {
		_, err := r.Resolve(rev)
		if !errors.Is(err, ErrRevisionUnsupported) {
			t.Errorf("Resolve(%q) = %v, want ErrRevisionUnsupported", rev, err)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", rev)) {
			t.Errorf("Resolve(%q): error does not name the revision: %v", rev, err)
		}
	}
	blob := g.run("rev-parse", "HEAD:apps/web.yaml")
	tree := g.run("rev-parse", "HEAD^{tree}")
	for _, rev := range []string{blob, blob[:10], tree} {
		if _, err := r.Resolve(rev); !errors.Is(err, ErrRevisionUnsupported) || !strings.Contains(err.Error(), "not a commit") {
			t.Errorf("Resolve(%q) = %v, want: not a commit", rev, err)
		}
	}
	for _, rev := range []string{
		"HEAD~3", "HEAD~99", "HEAD^2", "HEAD~99999999999999999999", "nope", "a", "ab", "abc",
		"HEAD^{nope}", "main~x", "a b", "main\x1b[2K",
	} {
		if _, err := r.Resolve(rev); !errors.Is(err, ErrRevisionNotFound) {
			t.Errorf("Resolve(%q) = %v, want ErrRevisionNotFound", rev, err)
		}
	}
	if _, err := r.Resolve("abc"); err == nil || !strings.Contains(err.Error(), "at least 4 hex digits") {
		t.Errorf("Resolve(abc) = %v", err)
	}
	// Control characters are quoted, never echoed raw.
	if _, err := r.Resolve("main\x1b[2K"); err == nil || strings.ContainsRune(err.Error(), 0x1b) {
		t.Errorf("raw ESC in %q", err)
	}
}

// collide stores two objects whose SHAs share their first 4 hex digits,
// made by mk(i) for i = 0, 1, ..., and returns their SHAs.
func collide(t *testing.T, repo *git.Repository, mk func(i int) plumbing.EncodedObject) (string, string) {
	t.Helper()
	seen := map[string]plumbing.EncodedObject{}
	for i := 0; i < 100000; i++ {
		o := mk(i)
		p := o.Hash().String()[:4]
		if prev, ok := seen[p]; ok {
			for _, obj := range []plumbing.EncodedObject{prev, o} {
				if _, err := repo.Storer.SetEncodedObject(obj); err != nil {
					t.Fatal(err)
				}
			}
			return prev.Hash().String(), o.Hash().String()
		}
		seen[p] = o
	}
	t.Fatal("no collision")
	return "", ""
}

func TestResolveAmbiguous(t *testing.T) {
	g, first, second, third := revHistory(t)
	repo, err := git.PlainOpen(g.dir)
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.CommitObject(plumbing.NewHash(third))
	if err != nil {
		t.Fatal(err)
	}
	// Two commits sharing a 4-digit prefix.
	c1, c2 := collide(t, repo, func(i int) plumbing.EncodedObject {
		sig := object.Signature{Name: "Ada", Email: "ada@example.org", When: time.Unix(1700000000, 0)}
		c := &object.Commit{Author: sig, Committer: sig, Message: fmt.Sprintf("candidate %d\n", i), TreeHash: head.TreeHash, ParentHashes: []plumbing.Hash{head.Hash}}
		o := &plumbing.MemoryObject{}
		if err := c.Encode(o); err != nil {
			t.Fatal(err)
		}
		return o
	})
	// Two blobs sharing a 4-digit prefix.
	b1, b2 := collide(t, repo, func(i int) plumbing.EncodedObject {
		o := &plumbing.MemoryObject{}
		o.SetType(plumbing.BlobObject)
		fmt.Fprintf(o, "blob %d\n", i)
		return o
	})
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{c1, c2}, {b1, b2}} {
		prefix := pair[0][:4]
		if out, err := exec.Command("git", "-C", g.dir, "rev-parse", "--verify", "-q", prefix).CombinedOutput(); err == nil {
			t.Fatalf("git resolves %s: %s", prefix, out) // the fixture is not ambiguous
		}
		_, err := r.Resolve(prefix)
		if !errors.Is(err, ErrRevisionAmbiguous) {
			t.Errorf("Resolve(%s) = %v, want ErrRevisionAmbiguous", prefix, err)
			continue
		}
		for _, sha := range pair {
			if !strings.Contains(err.Error(), sha[:12]) {
				t.Errorf("Resolve(%s): error does not name candidate %s: %v", prefix, sha[:12], err)
			}
		}
	}
	if c, err := r.Resolve(c2[:12]); err != nil || c.SHA != c2 {
		t.Errorf("Resolve(%s) = %v, %v", c2[:12], c.SHA, err)
	}

	// A name that is a ref and the prefix of another object.
	g.run("branch", first[:8], second)
	if _, err := r.Resolve(first[:8]); !errors.Is(err, ErrRevisionAmbiguous) || !strings.Contains(err.Error(), `"refs/heads/`+first[:8]+`"`) {
		t.Errorf("ref and prefix: %v", err)
	}
	if c, err := r.Resolve("heads/" + first[:8]); err != nil || c.SHA != second {
		t.Errorf("heads/%s = %v, %v", first[:8], c.SHA, err)
	}
	// A name that is two refs at different commits.
	g.run("tag", "dup", first)
	g.run("branch", "dup", second)
	if _, err := r.Resolve("dup"); !errors.Is(err, ErrRevisionAmbiguous) || !strings.Contains(err.Error(), `"refs/tags/dup"`) || !strings.Contains(err.Error(), `"refs/heads/dup"`) {
		t.Errorf("tag and branch: %v", err)
	}

	// rollback resolves through the same code, and writes nothing.
	before := g.run("rev-parse", "HEAD")
	for _, opts := range []RevertOptions{{Commits: []string{c1[:4]}}, {To: c1[:4]}, {Commits: []string{"dup"}}} {
		opts.AuthorName, opts.AuthorEmail = author.AuthorName, author.AuthorEmail
		if _, _, err := Revert(context.Background(), g.dir, opts); !errors.Is(err, ErrRevisionAmbiguous) {
			t.Errorf("Revert(%+v) = %v, want ErrRevisionAmbiguous", opts, err)
		}
	}
	if h := g.run("rev-parse", "HEAD"); h != before {
		t.Errorf("HEAD moved to %s", h)
	}
}

// `berth rollback 'HEAD@{2}'` reverted HEAD and exited 0.
func TestRevertRefusesReflogSyntax(t *testing.T) {
	g, _, _, _ := revHistory(t)
	before := g.run("rev-parse", "HEAD")
	for _, opts := range []RevertOptions{
		{Commits: []string{"HEAD@{2}"}}, {To: "HEAD@{2}"}, {Commits: []string{"HEAD:apps/web.yaml"}}, {To: "HEAD~1^{tree}"},
	} {
		opts.AuthorName, opts.AuthorEmail = author.AuthorName, author.AuthorEmail
		if _, _, err := Revert(context.Background(), g.dir, opts); !errors.Is(err, ErrRevisionUnsupported) {
			t.Errorf("Revert(%+v) = %v, want ErrRevisionUnsupported", opts, err)
		}
	}
	if h := g.run("rev-parse", "HEAD"); h != before {
		t.Errorf("HEAD moved to %s", h)
	}
	g.assertClean()
}

// A repository cloned from a URL into memory resolves the same way
// (prefixes are looked up without the on-disk index).
func TestResolveInMemoryClone(t *testing.T) {
	g, first, second, _ := revHistory(t)
	g.run("branch", "feature", second)
	r, err := Open(context.Background(), "file://"+g.dir)
	if err != nil {
		t.Fatal(err)
	}
	for rev, want := range map[string]string{first[:7]: first, "main~1": second, "feature": second, "origin/feature": second, "v1": first} {
		if c, err := r.Resolve(rev); err != nil || c.SHA != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", rev, c.SHA, err, want)
		}
	}
	if _, err := r.Resolve("HEAD@{1}"); !errors.Is(err, ErrRevisionUnsupported) {
		t.Errorf("HEAD@{1}: %v", err)
	}
	if _, err := r.Resolve("ab"); !errors.Is(err, ErrRevisionNotFound) {
		t.Errorf("ab: %v", err)
	}
}
