package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// reportCrash prints a recovered panic and its stack and returns exitCrash.
func reportCrash(stderr io.Writer, p any, stack []byte) int {
	fmt.Fprintf(stderr, "berth: internal error (a bug, please report it): panic: %s\n\n%s",
		safeText(fmt.Sprint(p)), safeLines(string(stack)))
	return exitCrash
}

// crashWithoutExit2 makes a panic that nothing recovers (on another
// goroutine) and a fatal runtime error (out of memory, concurrent map
// writes) end the process with SIGABRT after the usual traceback, instead
// of the runtime's exit status 2: plan and diff exit 2 for "changes", and a
// CI gate must never read a crash as a diff.
func crashWithoutExit2() {
	debug.SetTraceback("crash")
}
