package plan

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// pureImports is everything the planner may import: the standard
// library's pure parts and berth's pure packages. No os, net, sync,
// math/rand, log/slog, io/fs, os/exec or time: the planner must not be
// able to read the clock, the disk or the network, or start goroutines, so
// that the same inputs always give the same plan. Growing this list needs
// a reason that survives review.
var pureImports = []string{
	"cmp", "crypto/sha256", "encoding/hex", "encoding/json", "errors", "fmt",
	"maps", "slices", "sort", "strconv", "strings", "unicode", "unicode/utf8",
	"github.com/berth-gitops/berth/ownership",
	"github.com/berth-gitops/berth/spec",
}

// TestPurity fails when a non-test file of this package, or of ownership
// (the contract it reads), imports anything else.
func TestPurity(t *testing.T) {
	for _, dir := range []string{".", "../../ownership"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s: %v", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range ast.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if !slices.Contains(pureImports, p) {
					t.Errorf("%s imports %q: the planner must stay pure (no I/O, clock, randomness or goroutines)", f, p)
				}
			}
		}
	}
}
