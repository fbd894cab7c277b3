package secrets

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
)

// redacted is what every formatting of a Value prints.
const redacted = "[redacted]"

// Value is decrypted bytes. It never formats: fmt (every verb), JSON,
// YAML, text marshalling and slog all give "[redacted]". A Value holds
// only a handle to bytes kept in a package registry: fmt prints a struct
// field it cannot call methods on (an unexported one) by reflection, and
// with a bad verb even dereferences pointers, so no bytes may be
// reachable from the Value itself.
type Value struct{ h *handle }

type handle struct{ id uint64 }

var (
	registry sync.Map // id -> []byte
	lastID   atomic.Uint64
)

func newValue(b []byte) Value {
	h := &handle{id: lastID.Add(1)}
	registry.Store(h.id, b)
	// The bytes go (zeroed) with the last copy of the Value.
	runtime.AddCleanup(h, func(id uint64) {
		if b, ok := registry.LoadAndDelete(id); ok {
			clear(b.([]byte))
		}
	}, h.id)
	return Value{h: h}
}

// NewValue holds a copy of b as a Value (for bytes that are secret but
// did not come from Open: an edited file, a generated password).
func NewValue(b []byte) Value { return newValue(append([]byte(nil), b...)) }

// Reveal returns a copy of the bytes: the only way to them, so that every
// place that handles plaintext can be found by searching for it.
func (v Value) Reveal() []byte {
	out := append([]byte(nil), v.bytes()...)
	runtime.KeepAlive(v.h)
	return out
}

// Len is the number of bytes (not secret: a file's size shows it).
func (v Value) Len() int {
	n := len(v.bytes())
	runtime.KeepAlive(v.h)
	return n
}

// Equal tells whether two values hold the same bytes, without revealing
// either (a changed secret is told by this, never by printing).
func (v Value) Equal(o Value) bool {
	eq := string(v.bytes()) == string(o.bytes())
	runtime.KeepAlive(v.h)
	runtime.KeepAlive(o.h)
	return eq
}

// bytes are the registry's bytes; the caller keeps v.h alive while it
// uses them.
func (v Value) bytes() []byte {
	if v.h == nil {
		return nil
	}
	b, _ := registry.Load(v.h.id)
	s, _ := b.([]byte)
	return s
}

// Wipe zeroes the bytes in place: the Value and its copies read as zeros
// afterwards. Copies made by Reveal are the caller's to wipe.
func (v Value) Wipe() {
	clear(v.bytes())
	runtime.KeepAlive(v.h)
}

func (Value) String() string                 { return redacted }
func (Value) GoString() string               { return "secrets.Value(" + redacted + ")" }
func (Value) Format(f fmt.State, _ rune)     { _, _ = f.Write([]byte(redacted)) }
func (Value) MarshalJSON() ([]byte, error)   { return []byte(`"` + redacted + `"`), nil }
func (Value) MarshalText() ([]byte, error)   { return []byte(redacted), nil }
func (Value) MarshalYAML() (any, error)      { return redacted, nil }
func (Value) LogValue() slog.Value           { return slog.StringValue(redacted) }
func (Value) MarshalBinary() ([]byte, error) { return []byte(redacted), nil }
