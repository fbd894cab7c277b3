package lxd

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// TestOperationErrorIsBounded: an operation whose error is a failed
// tool's whole output (tar onto a full pool: a line per file) prints its
// start and its end, with how much was cut, whatever its length; a short
// one prints whole. Matching (Is) still sees the whole error.
func TestOperationErrorIsBounded(t *testing.T) {
	long := "Failed creating instance from image: Unpack failed: Failed to run: tar -zxf -: Process exited with non-zero value 2 (" +
		strings.Repeat("tar: ./usr/share/zoneinfo/Europe/Zürich: Cannot write: No space left on device\n", 4000) +
		"tar: Exiting with failure status due to previous errors)"
	e := &OperationError{Description: "Creating instance", StatusCode: 400, Err: long}
	msg := e.Error()
	if len(msg) > maxOperationErr+200 || !utf8.ValidString(msg) {
		t.Errorf("message of %d bytes (valid UTF-8: %v)", len(msg), utf8.ValidString(msg))
	}
	for _, want := range []string{`lxd: operation "Creating instance" failed: Failed creating instance from image: Unpack failed`,
		"No space left on device", "bytes cut ...]", "tar: Exiting with failure status due to previous errors)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	short := &OperationError{Description: "Creating instance", StatusCode: 400, Err: "Instance \"web-0\" already exists"}
	if got := short.Error(); got != `lxd: operation "Creating instance" failed: Instance "web-0" already exists` {
		t.Errorf("short message: %s", got)
	}
	e.Err = long + " not found"
	if !e.Is(ErrNotFound) {
		t.Error("Is does not see the end of a long error")
	}
}
