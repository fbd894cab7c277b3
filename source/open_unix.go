//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package source

import (
	"errors"
	"os"
	"syscall"
)

// openNoFollow opens a file for reading without following a symbolic
// link (ELOOP instead) and without blocking if it has become a FIFO.
func openNoFollow(p string) (*os.File, error) {
	return os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

func isSymlinkErr(err error) bool { return errors.Is(err, syscall.ELOOP) }

// writableDir tells whether this process may create and remove entries
// in the folder d.
func writableDir(d string) error { return syscall.Access(d, 0x2|0x1) } // W_OK|X_OK
