package source

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

func appYAML(name string) string {
	return "apiVersion: berth/v1\nkind: App\nmetadata: {name: " + name + "}\nspec:\n  system: {image: debian}\n"
}

// submoduleRepo makes a repository whose spec folder apps holds an app of
// its own, a submodule (vendor, added with git submodule add, so a .git
// file on disk) and an embedded repository (nested, added as it is, so a
// .git folder on disk), each holding an app.
func submoduleRepo(t *testing.T) (*gitRepo, string) {
	t.Helper()
	vendor := newGitRepo(t)
	vendor.write("db.yaml", appYAML("db"))
	vendor.commit("db")
	g := newGitRepo(t)
	g.write("apps/web.yaml", appYAML("web"))
	g.commit("web")
	g.run("-c", "protocol.file.allow=always", "submodule", "add", "-q", vendor.dir, "apps/vendor")
	nested := &gitRepo{t: t, dir: filepath.Join(g.dir, "apps", "nested")}
	nested.write("cache.yaml", appYAML("cache"))
	nested.run("init", "-q", "-b", "main")
	nested.commit("cache")
	return g, g.commit("vendor the db and the cache")
}

// A submodule in the spec tree is an error on its folder, which stops
// pruning, read from the commit as from the work tree; before, Git mode
// skipped it, so its apps looked removed and were pruned, while validate
// on the work tree read them.
func TestSubmodulesAreRefusedInGitAndOnDisk(t *testing.T) {
	g, sha := submoduleRepo(t)
	if ls := g.run("ls-tree", "HEAD", "apps/"); !containsAll(ls, "160000 commit", "apps/vendor", "apps/nested") {
		t.Fatalf("the fixture has no gitlinks:\n%s", ls)
	}
	r, err := Open(context.Background(), g.dir)
	if err != nil {
		t.Fatal(err)
	}
	fromGit, err := r.SpecFS(sha, "apps")
	if err != nil {
		t.Fatal(err)
	}
	snap, err := WorktreeSnapshot(g.dir, "apps")
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewGitSource(GitOptions{URL: g.dir, Dir: "apps"})
	if err != nil {
		t.Fatal(err)
	}
	synced, _, err := src.Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const msg = "is a Git submodule (another repository, with a .git of its own): a commit holds no files of it, so berth never reads specs from it; commit the files to this repository instead"
	for what, load := range map[string]func() (*spec.Result, error){
		"commit":     func() (*spec.Result, error) { return spec.Load(context.Background(), fromGit, spec.Options{}) },
		"git source": func() (*spec.Result, error) { return spec.Load(context.Background(), synced.FS, spec.Options{}) },
		"work tree":  func() (*spec.Result, error) { return spec.Load(context.Background(), snap.FS, spec.Options{}) },
		"validate disk": func() (*spec.Result, error) {
			return spec.LoadDir(context.Background(), filepath.Join(g.dir, "apps"), spec.Options{})
		},
	} {
		res, err := load()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		var got []string
		for _, d := range res.Diagnostics {
			got = append(got, d.String())
		}
		want := []string{"nested: " + msg, "vendor: " + msg}
		if !slices.Equal(got, want) {
			t.Errorf("%s: diagnostics\n%q\nwant\n%q", what, got, want)
		}
		// Unparsable is what stops pruning (Desired.PruneBlocked).
		if !slices.Equal(res.Unparsable, []string{"nested", "vendor"}) {
			t.Errorf("%s: Unparsable = %v, want [nested vendor]", what, res.Unparsable)
		}
		if len(res.Apps) != 1 || res.Apps[0].Metadata.Name != "web" {
			t.Errorf("%s: apps %v, want web only", what, res.Apps)
		}
	}
}

func containsAll(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
