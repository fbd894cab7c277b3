package spec

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/berth-gitops/berth/internal/textesc"
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
// editors and CI annotators recognise. Unknown parts are left out. It is
// one line of text for a terminal: control characters in the file name,
// path or message (a newline or ESC in a file name or a spec value) are
// escaped, so they can neither forge lines nor drive the terminal. The
// fields themselves, and so JSON output, stay exact.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(EscapeText(d.File))
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d", d.Line)
		if d.Col > 0 {
			fmt.Fprintf(&b, ":%d", d.Col)
		}
	}
	b.WriteString(": ")
	if d.Path != "" {
		b.WriteString(EscapeText(d.Path))
		b.WriteString(": ")
	}
	b.WriteString(EscapeText(d.Message))
	return b.String()
}

// AppendPathKey appends a map key to a field path the way Diagnostic.Path
// writes it: .key for a plain key, ["key"] (Go-quoted) for any other, so
// that a key holding a dot (security.privileged) never reads as two nested
// fields, and two different paths never print alike.
func AppendPathKey(path, key string) string {
	switch {
	case !plainKey.MatchString(key):
		return path + "[" + strconv.Quote(key) + "]"
	case path == "":
		return key
	}
	return path + "." + key
}

// EscapeText makes s safe to print as (part of) one line of terminal text.
// It is textesc.Line, berth's one escaper (tab included, as \t), named
// here for the packages that print spec values.
func EscapeText(s string) string { return textesc.Line(s) }

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
