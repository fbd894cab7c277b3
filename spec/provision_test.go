package spec

import (
	"io/fs"
	"testing"
	"testing/fstest"
)

// loadWithFiles loads src as specs/app.yaml of a repository that also
// holds files: the spec root is specs/, Options.Files the repository root.
func loadWithFiles(t *testing.T, src string, files fstest.MapFS, opts Options) *Result {
	t.Helper()
	repo := fstest.MapFS{"specs/app.yaml": {Data: []byte(src)}}
	for name, f := range files {
		repo[name] = f
	}
	if opts.Files == nil {
		opts.Files = repo
	}
	specs, err := fs.Sub(repo, "specs")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Load(t.Context(), specs, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
