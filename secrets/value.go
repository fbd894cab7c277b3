package secrets

import (
	"fmt"
	"log/slog"
)

// redacted is what every formatting of a Value prints.
const redacted = "[redacted]"

// Value is decrypted bytes. It never formats: fmt (every verb), JSON,
// YAML, text marshalling and slog all give "[redacted]". The bytes sit
// behind a pointer to an unexported type so that even reflection-based
// printing of a struct that holds a Value in an unexported field (fmt
// cannot call methods there) prints an address, never the bytes.
type Value struct{ p *secretBytes }

type secretBytes struct{ b []byte }

func newValue(b []byte) Value { return Value{p: &secretBytes{b: b}} }

// Reveal returns a copy of the bytes: the only way to them, so that every
// place that handles plaintext can be found by searching for it.
func (v Value) Reveal() []byte {
	if v.p == nil {
		return nil
	}
	return append([]byte(nil), v.p.b...)
}

// Len is the number of bytes (not secret: a file's size shows it).
func (v Value) Len() int {
	if v.p == nil {
		return 0
	}
	return len(v.p.b)
}

// Equal tells whether two values hold the same bytes, without revealing
// either (a changed secret is told by this, never by printing).
func (v Value) Equal(o Value) bool { return string(v.bytes()) == string(o.bytes()) }

func (v Value) bytes() []byte {
	if v.p == nil {
		return nil
	}
	return v.p.b
}

// Wipe zeroes the bytes in place: the Value and its copies read as zeros
// afterwards. Copies made by Reveal are the caller's to wipe.
func (v Value) Wipe() {
	if v.p != nil {
		clear(v.p.b)
	}
}

func (Value) String() string                 { return redacted }
func (Value) GoString() string               { return "secrets.Value(" + redacted + ")" }
func (Value) Format(f fmt.State, _ rune)     { _, _ = f.Write([]byte(redacted)) }
func (Value) MarshalJSON() ([]byte, error)   { return []byte(`"` + redacted + `"`), nil }
func (Value) MarshalText() ([]byte, error)   { return []byte(redacted), nil }
func (Value) MarshalYAML() (any, error)      { return redacted, nil }
func (Value) LogValue() slog.Value           { return slog.StringValue(redacted) }
func (Value) MarshalBinary() ([]byte, error) { return []byte(redacted), nil }
