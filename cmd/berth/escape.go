package main

import (
	"reflect"
	"strconv"
	"strings"

	"github.com/berth-gitops/berth/internal/textesc"
	"github.com/berth-gitops/berth/reconciler/plan"
)

// Text output must not let a value drive the terminal: every text printer
// passes what it did not write itself through safeText, or a whole
// rendering through safeLines. Both are berth's one escaper, textesc, which
// spec's diagnostics and live's provision output use too. JSON output is
// left exact.

// safeText returns s for one line of output (textesc.Line): control,
// bidi and invisible characters, tab included, and invalid UTF-8 bytes are
// written as Go escapes (\t, \n, \x1b, \u202e, \xff).
func safeText(s string) string { return textesc.Line(s) }

// safeLines is safeText for a rendering of several lines: each line is
// made safe and the newlines and the layout's tabs between them stay.
func safeLines(s string) string { return textesc.Lines(s) }

// needsEscape reports whether s holds anything safeText would escape.
func needsEscape(s string) bool { return textesc.NeedsEscape(s) }

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
