//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package source

import "os"

// openNoFollow opens a file for reading; on this system the caller's
// check of the type once open is the only guard.
func openNoFollow(p string) (*os.File, error) { return os.Open(p) }

func isSymlinkErr(error) bool { return false }

// writableDir is not checked on this system: a failed write is undone.
func writableDir(string) error { return nil }
