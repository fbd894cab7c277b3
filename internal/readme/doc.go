// Package readme holds tests that keep the top-level README.md true to the
// code: its package map is checked against `go list`. It has no code.
package readme
