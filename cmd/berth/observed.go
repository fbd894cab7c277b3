package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// maxObservedSize bounds an observed-state snapshot (plan --observed): a
// fleet of thousands of instances takes a few MiB.
const maxObservedSize = 64 << 20

// readObserved reads a snapshot written by `berth observe`, strictly: one
// JSON object and nothing after it, keys spelled exactly as documented
// (encoding/json alone would take "Instances" for "instances"), no unknown
// or repeated keys, no null where an object, a list, a string or a number
// belongs, an "instances" list, and every instance, member, image and
// image alias named once.
func readObserved(path string) (plan.Observed, error) {
	var obs plan.Observed
	f, err := os.Open(path)
	if err != nil {
		return obs, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxObservedSize+1))
	if err != nil {
		return obs, err
	}
	if len(b) > maxObservedSize {
		return obs, fmt.Errorf("%s: larger than %d MiB, not an observed-state snapshot", path, maxObservedSize>>20)
	}
	if err := decodeObserved(b, &obs); err != nil {
		return plan.Observed{}, fmt.Errorf("%s: not an observed-state snapshot: %w", path, err)
	}
	return obs, nil
}

func decodeObserved(b []byte, obs *plan.Observed) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var top json.RawMessage
	if err := dec.Decode(&top); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty")
		}
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("data after the snapshot's JSON object (at byte %d)", dec.InputOffset())
	}
	if err := checkJSON(top, reflect.TypeFor[plan.Observed](), ""); err != nil {
		return err
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(top, &keys); err != nil {
		return err
	}
	if _, ok := keys["instances"]; !ok {
		return errors.New(`no "instances" key (an LXD without instances is "instances": [])`)
	}
	dec = json.NewDecoder(bytes.NewReader(top))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obs); err != nil {
		return err
	}
	return checkUnique(obs)
}

// checkUnique refuses a snapshot that names an instance, a member, an
// image or an image alias twice: LXD never does, and the planner indexes
// them by name, so the last one would silently win.
func checkUnique(obs *plan.Observed) error {
	unique := func(list string, n int, key func(int) string, what string) error {
		seen := make(map[string]int, n)
		for i := range n {
			k := key(i)
			if k == "" {
				return fmt.Errorf("%s[%d]: no %s", list, i, what)
			}
			if j, dup := seen[k]; dup {
				return fmt.Errorf("%s[%d]: %q is also %s[%d]", list, i, k, list, j)
			}
			seen[k] = i
		}
		return nil
	}
	if err := unique("instances", len(obs.Instances), func(i int) string { return obs.Instances[i].Name }, "name"); err != nil {
		return err
	}
	if err := unique("members", len(obs.Members), func(i int) string { return obs.Members[i].Name }, "name"); err != nil {
		return err
	}
	if err := unique("images", len(obs.Images), func(i int) string { return obs.Images[i].Fingerprint }, "fingerprint"); err != nil {
		return err
	}
	seen := map[string]int{}
	for i, img := range obs.Images {
		for _, a := range img.Aliases {
			if j, dup := seen[a]; dup && j != i {
				return fmt.Errorf("images[%d]: alias %q is also an alias of images[%d]", i, a, j)
			}
			seen[a] = i
		}
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkJSON checks raw against the shape of t where encoding/json is
// lenient: key case, unknown and repeated keys, and null. Types that decode
// themselves (json.Unmarshaler) and the types of scalars are left to
// encoding/json.
func checkJSON(raw json.RawMessage, t reflect.Type, path string) error {
	if t.Implements(jsonUnmarshaler) || reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil
	}
	at := path
	if at == "" {
		at = "the snapshot"
	}
	if string(bytes.TrimSpace(raw)) == "null" {
		if t.Kind() == reflect.Pointer || t.Kind() == reflect.Interface {
			return nil
		}
		return fmt.Errorf("%s: null, want %s", at, jsonKind(t))
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkJSON(raw, t.Elem(), path)
	case reflect.Struct:
		fields := jsonFields(t)
		return eachMember(raw, at, func(key string, v json.RawMessage) error {
			f, ok := fields[key]
			if !ok {
				for name := range fields {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("%s: unknown key %q (keys are case-sensitive: %q)", at, key, name)
					}
				}
				return fmt.Errorf("%s: unknown key %q", at, key)
			}
			return checkJSON(v, f.Type, join(path, key))
		})
	case reflect.Map:
		return eachMember(raw, at, func(key string, v json.RawMessage) error {
			return checkJSON(v, t.Elem(), join(path, key))
		})
	case reflect.Slice, reflect.Array:
		dec := json.NewDecoder(bytes.NewReader(raw))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return fmt.Errorf("%s: want %s", at, jsonKind(t))
		}
		for i := 0; dec.More(); i++ {
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return err
			}
			if err := checkJSON(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// eachMember calls fn for each member of the JSON object raw, refusing
// anything else and repeated keys.
func eachMember(raw json.RawMessage, at string, fn func(key string, v json.RawMessage) error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("%s: want an object", at)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if seen[key] {
			return fmt.Errorf("%s: key %q appears twice", at, key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		if err := fn(key, v); err != nil {
			return err
		}
	}
	return nil
}

// jsonFields maps the JSON names of t's fields to the fields.
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	}
	return "a number"
}

// normalizeObserved replaces the nil lists and maps of obs that JSON would
// write as null (fields without omitempty) by empty ones, so that what
// `berth observe` writes is what `plan --observed` accepts.
func normalizeObserved(obs plan.Observed) plan.Observed {
	v := reflect.ValueOf(&obs).Elem()
	fillNil(v)
	return obs
}

func fillNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			fillNil(v.Elem())
		}
	case reflect.Slice:
		for i := range v.Len() {
			fillNil(v.Index(i))
		}
	case reflect.Map:
		if k := v.Type().Elem().Kind(); k != reflect.Map && k != reflect.Slice {
			return
		}
		iter := v.MapRange()
		for iter.Next() {
			if e := iter.Value(); e.IsNil() {
				empty := reflect.MakeMap(e.Type())
				if e.Kind() == reflect.Slice {
					empty = reflect.MakeSlice(e.Type(), 0, 0)
				}
				v.SetMapIndex(iter.Key(), empty)
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			_, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			omit := strings.Contains(","+opts+",", ",omitempty,")
			switch {
			case fv.Kind() == reflect.Slice && fv.IsNil() && !omit:
				fv.Set(reflect.MakeSlice(fv.Type(), 0, 0))
			case fv.Kind() == reflect.Map && fv.IsNil() && !omit:
				fv.Set(reflect.MakeMap(fv.Type()))
			}
			fillNil(fv)
		}
	}
}
