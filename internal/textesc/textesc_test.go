package textesc

import "testing"

func TestLineAndLines(t *testing.T) {
	for _, tt := range []struct{ in, line, lines string }{
		{"plain ✓ é \\n", "plain ✓ é \\n", "plain ✓ é \\n"},
		// A tab in one line is shown; in a rendering it is layout.
		{"a\tb", `a\tb`, "a\tb"},
		{"a\nb", `a\nb`, "a\nb"},
		{"\x1b[2J\r\a\x7f\u0085", `\x1b[2J\r\a\x7f\u0085`, `\x1b[2J\r\a\x7f\u0085`},
		{"bidi\u202e\u2066\u061c\u200e ls\u2028", `bidi\u202e\u2066\u061c\u200e ls\u2028`, `bidi\u202e\u2066\u061c\u200e ls\u2028`},
		// Invisible: zero-width, word joiner and invisible operators, BOM,
		// tags (here a hidden "hi").
		{"safe\u200b\u200c\u200d\u2060\u2064\ufeff", `safe\u200b\u200c\u200d\u2060\u2064\ufeff`, `safe\u200b\u200c\u200d\u2060\u2064\ufeff`},
		{"ok\U000e0001\U000e0068\U000e0069\U000e007f", `ok\U000e0001\U000e0068\U000e0069\U000e007f`, `ok\U000e0001\U000e0068\U000e0069\U000e007f`},
		// Neighbours that are visible stay.
		{"\u200a\u2010x", "\u200a\u2010x", "\u200a\u2010x"},
		{"bad\xff\xc3 ok\ufffd", `bad\xff\xc3 ok` + "\ufffd", `bad\xff\xc3 ok` + "\ufffd"},
	} {
		if got := Line(tt.in); got != tt.line {
			t.Errorf("Line(%q) = %q, want %q", tt.in, got, tt.line)
		}
		if got := Lines(tt.in); got != tt.lines {
			t.Errorf("Lines(%q) = %q, want %q", tt.in, got, tt.lines)
		}
		if NeedsEscape(tt.in) != (tt.line != tt.in) {
			t.Errorf("NeedsEscape(%q) = %v", tt.in, NeedsEscape(tt.in))
		}
	}
}
