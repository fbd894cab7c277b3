package main

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// Text output must not let a value drive the terminal. A spec value, a file
// name, an LXD config key or a Docker error may hold ESC sequences (which
// can erase or rewrite the lines above), a newline or carriage return (which
// forge output lines), C1 controls, or Unicode bidi overrides (which reorder
// what a reviewer reads). Every text printer passes what it did not write
// itself through safeText, or a whole rendering through safeLines. JSON
// output is left exact.

// safeText returns s for one line of output: C0 controls but tab, DEL, C1
// controls, Unicode line and paragraph separators, bidi controls and
// invalid UTF-8 bytes are written as Go escapes (\n, \x1b, \u202e, \xff).
// Everything else, backslashes included, is left as it is.
func safeText(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case escapeRune(r) && r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case escapeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// safeLines is safeText for a rendering of several lines: each line is
// made safe and the newlines between them stay.
func safeLines(s string) string {
	if !needsEscape(strings.ReplaceAll(s, "\n", "")) {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = safeText(l)
	}
	return strings.Join(lines, "\n")
}

func needsEscape(s string) bool {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || escapeRune(r) {
			return true
		}
		i += size
	}
	return false
}

// escapeRune reports whether r must not reach a terminal as it is.
func escapeRune(r rune) bool {
	switch {
	case r == '\t':
		return false
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, // ALM, LRM, RLM
		r >= 0x202a && r <= 0x202e, // LRE, RLE, PDF, LRO, RLO
		r >= 0x2066 && r <= 0x2069, // LRI, RLI, FSI, PDI
		r == 0x2028, r == 0x2029:   // line and paragraph separators
		return true
	}
	return false
}

// sanitized returns a deep copy of v with every exported string in it
// (struct fields, slice elements, map keys and values) passed through
// safeText, so that a type's own Text method prints it safely. v itself is
// not changed. The fields of selfEscaped are left to their printer.
func sanitized[T any](v T) T {
	return sanitizeValue(reflect.ValueOf(&v).Elem()).Interface().(T)
}

// selfEscaped are string fields whose printer shows them safely itself,
// when keep says so: a plan reason's values when they hold a newline (shown
// as "<N lines, sha256:...>", never printed), and a diff's values (shown
// escapes them). Escaping them first would print a multi-line value whole.
var selfEscaped = map[reflect.Type]map[string]func(string) bool{
	reflect.TypeFor[plan.Reason](): {"Old": hasNewline, "New": hasNewline},
	reflect.TypeFor[fieldChange](): {"Old": always, "New": always},
}

func hasNewline(s string) bool { return strings.Contains(s, "\n") }
func always(string) bool       { return true }

func sanitizeValue(v reflect.Value) reflect.Value {
	t := v.Type()
	switch v.Kind() {
	case reflect.String:
		out := reflect.New(t).Elem()
		out.SetString(safeText(v.String()))
		return out
	case reflect.Struct:
		out := reflect.New(t).Elem()
		out.Set(v)
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			if keep := selfEscaped[t][f.Name]; keep != nil && fv.Kind() == reflect.String && keep(fv.String()) {
				continue
			}
			out.Field(i).Set(sanitizeValue(fv))
		}
		return out
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeSlice(t, v.Len(), v.Len())
		for i := range v.Len() {
			out.Index(i).Set(sanitizeValue(v.Index(i)))
		}
		return out
	case reflect.Array:
		out := reflect.New(t).Elem()
		for i := range v.Len() {
			out.Index(i).Set(sanitizeValue(v.Index(i)))
		}
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(t, v.Len())
		iter := v.MapRange()
		for iter.Next() {
			k := sanitizeValue(iter.Key())
			if out.MapIndex(k).IsValid() && k.Kind() == reflect.String {
				// Two keys escape alike: keep both, this one quoted.
				k = reflect.ValueOf(strconv.QuoteToASCII(iter.Key().String())).Convert(k.Type())
			}
			out.SetMapIndex(k, sanitizeValue(iter.Value()))
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(t.Elem())
		out.Elem().Set(sanitizeValue(v.Elem()))
		return out
	}
	// Numbers, booleans, interfaces (errors), funcs, channels: as they are.
	return v
}
