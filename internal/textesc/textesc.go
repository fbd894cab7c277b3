// Package textesc is berth's one escaper for terminal text. Spec values,
// file names, LXD config, Docker and provision output are untrusted: they
// may hold ESC sequences (which can erase or rewrite the lines above), a
// newline or carriage return (which forge output lines), C1 controls, or
// Unicode bidi overrides (which reorder what a reviewer reads). Every text
// printer, in spec (diagnostics), live (provision output) and the CLI,
// passes what it did not write itself through Line, or a whole rendering
// through Lines, so that all of them show the same value the same way.
package textesc

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Line returns s for (part of) one line of output: C0 controls (tab
// included, so that a tab inside a value shows as \t rather than as
// blank space of unknown width), DEL, C1 controls, the Unicode line and
// paragraph separators, bidi controls, invisible characters (zero-width
// ones, the byte order mark, Unicode tags) and bytes that are not UTF-8
// are written as Go escapes (\t, \n, \x1b, \u202e, \u200b, \xff). Everything else,
// backslashes included, is left as it is.
func Line(s string) string { return escape(s, false) }

// Lines is Line for a rendering of several lines: newlines and tabs (the
// rendering's own layout, such as a Go stack trace's indent) stay, and each
// line is escaped. Values placed in a rendering go through Line first, so
// a tab in a value is still shown as \t.
func Lines(s string) string { return escape(s, true) }

func escape(s string, layout bool) string {
	i := strings.IndexFunc(s, func(r rune) bool { return r == utf8.RuneError || escaped(r, layout) })
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
		case escaped(r, layout):
			q := strconv.QuoteRuneToASCII(r) // '\n', '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(rest[:size])
		}
		rest = rest[size:]
	}
	return b.String()
}

func escaped(r rune, layout bool) bool {
	if layout && (r == '\n' || r == '\t') {
		return false
	}
	return MustEscape(r)
}

// NeedsEscape reports whether Line would change s.
func NeedsEscape(s string) bool { return Line(s) != s }

// MustEscape reports whether r must not reach a terminal as it is.
func MustEscape(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r < 0xa0: // C0 (tab included), DEL, C1
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c: // bidi
		return true
	// Invisible characters: a value that differs only by them would read
	// the same as another ("safe" and "safe\u200b"), and tag characters
	// can carry hidden text. Zero-width space, non-joiner and joiner; word
	// joiner and the invisible operators; the byte order mark (zero-width
	// no-break space); the tag block.
	case r >= 0x200b && r <= 0x200d, r >= 0x2060 && r <= 0x2064, r == 0xfeff, r >= 0xe0000 && r <= 0xe007f:
		return true
	}
	return false
}
