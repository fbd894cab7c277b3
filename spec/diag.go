package spec

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
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

// EscapeText makes s safe to print as (part of) one line of terminal text:
// C0 control characters (tab included), DEL, C1 controls, the Unicode line
// and paragraph separators, bidi controls and bytes that are not UTF-8 are
// written as Go escapes (\n, \x1b, \u202e, \xff). Everything else is left
// as it is.
func EscapeText(s string) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r == utf8.RuneError || mustEscape(r) })
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.WriteString(s[:i])
	rest := s[i:]
	for len(rest) > 0 {
		r, size := utf8.DecodeRuneInString(rest)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, rest[0])
		case mustEscape(r):
			q := strconv.QuoteRuneToASCII(r) // '\n', '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(rest[:size])
		}
		rest = rest[size:]
	}
	return b.String()
}

func mustEscape(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r < 0xa0: // C0, DEL, C1
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c: // bidi
		return true
	}
	return false
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
