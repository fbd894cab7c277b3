package plan

import (
	goast "go/ast"
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
// math/rand, log/slog, io/fs or os/exec: the planner must not be
// able to read the clock, the disk or the network, or start goroutines, so
// that the same inputs always give the same plan. Growing this list needs
// a reason that survives review.
var pureImports = []string{
	"cmp", "crypto/sha256", "encoding/binary", "encoding/hex", "encoding/json", "errors", "fmt",
	"maps", "slices", "sort", "strconv", "strings", "unicode", "unicode/utf8",
	// time for its values (Observed.At, durations); timeUse bans the
	// parts that read the clock or wait.
	"time",
	"github.com/berth-gitops/berth/ownership",
	"github.com/berth-gitops/berth/spec",
}

// clockFuncs are the parts of package time that read the clock, wait or
// start timers.
var clockFuncs = []string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "Tick", "NewTicker", "NewTimer"}

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
			ast, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range ast.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if !slices.Contains(pureImports, p) {
					t.Errorf("%s imports %q: the planner must stay pure (no I/O, clock, randomness or goroutines)", f, p)
				}
			}
			goast.Inspect(ast, func(n goast.Node) bool {
				if sel, ok := n.(*goast.SelectorExpr); ok {
					if x, ok := sel.X.(*goast.Ident); ok && x.Name == "time" && slices.Contains(clockFuncs, sel.Sel.Name) {
						t.Errorf("%s uses time.%s: the planner takes the time as a value (Observed.At), it never reads the clock", f, sel.Sel.Name)
					}
				}
				return true
			})
		}
	}
}
