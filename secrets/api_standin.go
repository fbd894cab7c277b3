// Package secrets is a STAND-IN with the API of the real package (SOPS
// with age recipients), so that the delivery half of secrets can be built
// and tested before it lands. The merge replaces this file.
//
// The fake treats a file as already plaintext YAML: it is "encrypted"
// when it has a top-level sops mapping whose age list names recipients,
// and a key opens it when its public key (the "# public key:" comment of
// an age key file) is one of them. Values are read as they are written.
package secrets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

const redacted = "[redacted]"

// Value is decrypted bytes. It never formats: fmt, slog and JSON print
// "[redacted]"; only Reveal gives the bytes.
type Value struct{ b []byte }

// Reveal returns the bytes.
func (v Value) Reveal() []byte { return v.b }

// Len is the number of bytes.
func (v Value) Len() int { return len(v.b) }

func (v Value) String() string               { return redacted }
func (v Value) GoString() string             { return redacted }
func (v Value) Format(f fmt.State, _ rune)   { _, _ = f.Write([]byte(redacted)) }
func (v Value) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
func (v Value) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Keys are age identities.
type Keys struct{ recipients []string }

// LoadKeys reads age key files.
func LoadKeys(paths ...string) (*Keys, error) {
	k := &Keys{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("age key file %s: %w", p, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if r, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "# public key: "); ok {
				k.recipients = append(k.recipients, r)
			}
		}
	}
	return k, nil
}

// Recipients are the public keys of the identities.
func (k *Keys) Recipients() []string { return k.recipients }

// Metadata is what a file says about itself without decrypting.
type Metadata struct {
	Format     string
	Recipients []string
	doc        map[string]any // the fake's plaintext, for HasKey
}

type fakeFile struct {
	doc  map[string]any
	meta *Metadata
}

func parse(name string, data []byte) (*fakeFile, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: not a SOPS file: %w", name, err)
	}
	s, ok := doc["sops"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s is not encrypted with SOPS (no sops metadata)", name)
	}
	m := &Metadata{Format: "yaml"}
	ages, _ := s["age"].([]any)
	for _, a := range ages {
		if am, ok := a.(map[string]any); ok {
			if r, ok := am["recipient"].(string); ok {
				m.Recipients = append(m.Recipients, r)
			}
		}
	}
	delete(doc, "sops")
	return &fakeFile{doc: doc, meta: m}, nil
}

// Inspect reads the metadata of a SOPS file without decrypting it.
func Inspect(name string, data []byte) (*Metadata, error) {
	f, err := parse(name, data)
	if err != nil {
		return nil, err
	}
	m := *f.meta
	m.doc = f.doc
	return &m, nil
}

// HasKey reports whether a key path (a.b.c) is in the file.
func (m *Metadata) HasKey(path string) bool {
	_, ok := lookup(m.doc, path)
	return ok
}

func lookup(doc map[string]any, path string) (any, bool) {
	var cur any = doc
	for _, part := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// Document is a decrypted file.
type Document struct {
	doc   map[string]any
	whole []byte
}

// Open decrypts a SOPS file with keys.
func Open(name string, data []byte, keys *Keys) (*Document, error) {
	f, err := parse(name, data)
	if err != nil {
		return nil, err
	}
	if keys == nil || !slices.ContainsFunc(keys.recipients, func(r string) bool { return slices.Contains(f.meta.Recipients, r) }) {
		return nil, fmt.Errorf("%s: no age key opens it; it is encrypted to %s", name, strings.Join(f.meta.Recipients, ", "))
	}
	whole, _ := yaml.Marshal(f.doc)
	return &Document{doc: f.doc, whole: whole}, nil
}

// Lookup returns the value at a key path.
func (d *Document) Lookup(path string) (Value, error) {
	v, ok := lookup(d.doc, path)
	if !ok {
		return Value{}, fmt.Errorf("no key %q", path)
	}
	s, ok := v.(string)
	if !ok {
		return Value{}, errors.New("key " + path + " is not a string")
	}
	return Value{b: []byte(s)}, nil
}

// Whole is the whole decrypted document.
func (d *Document) Whole() Value { return Value{b: d.whole} }
