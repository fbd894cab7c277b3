package spec

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Diagnostic is one problem found in the spec tree. Every problem carries
// its position so people can jump to it, and a field path so the message
// still makes sense when the position is in a shared anchor or a long file.
type Diagnostic struct {
	File string // slash-separated, relative to the spec root
	Line int    // 1-based; 0 when the YAML parser could not tell
	Col  int    // 1-based; 0 when unknown
	// Path is the field path, like spec.container.healthcheck.interval,
	// spec.container.volumes[0].source or spec.system.config["limits.cpu"];
	// empty for problems with a whole file.
	Path    string
	Message string
}

// String formats the diagnostic as "FILE:LINE:COL: PATH: message", the shape
// editors and CI annotators recognise. Unknown parts are left out.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d", d.Line)
		if d.Col > 0 {
			fmt.Fprintf(&b, ":%d", d.Col)
		}
	}
	b.WriteString(": ")
	if d.Path != "" {
		b.WriteString(d.Path)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// Diagnostics is every problem of a load, sorted by file and position. It is
// an error so callers can return it as one.
type Diagnostics []Diagnostic

// Error joins all diagnostics, one per line.
func (ds Diagnostics) Error() string {
	lines := make([]string, len(ds))
	for i, d := range ds {
		lines[i] = d.String()
	}
	return strings.Join(lines, "\n")
}

// sort orders by position. The sort is stable so that two problems at the
// same spot keep the order the decoder found them in, which keeps output
// byte-identical between runs.
func (ds Diagnostics) sort() {
	slices.SortStableFunc(ds, func(a, b Diagnostic) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
		)
	})
}
