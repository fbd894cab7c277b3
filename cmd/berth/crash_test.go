package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// A panic in a command ends with exitCrash and the panic and its stack on
// stderr, never with 2, which plan and diff use for "changes" (issue 9 #2:
// a crash read as a diff by a CI gate).
func TestPanicExitsWithCrashCodeNot2(t *testing.T) {
	for _, where := range []string{"RunE", "PreRunE"} {
		root := newRootCmd()
		boom := &cobra.Command{Use: "boom"}
		crash := func(*cobra.Command, []string) error { panic("makeslice: len out of range \x1b[2J") }
		if where == "RunE" {
			boom.RunE = crash
		} else {
			boom.PreRunE = crash
			boom.RunE = func(*cobra.Command, []string) error { return nil }
		}
		root.AddCommand(boom)
		var out, errb bytes.Buffer
		code := execute(context.Background(), root, []string{"boom"}, &out, &errb)
		stderr := errb.String()
		if code != exitCrash || code == exitChanges {
			t.Errorf("%s: code %d, want %d", where, code, exitCrash)
		}
		for _, want := range []string{"berth: internal error", "panic: makeslice: len out of range \\x1b[2J", "goroutine ", "crash_test.go"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", where, want, stderr)
			}
		}
		if strings.Contains(stderr, "\x1b") {
			t.Errorf("%s: raw ESC on stderr", where)
		}
	}
}

// A panic on a goroutine nobody recovers, or a fatal runtime error, must
// not exit 2 either: berth's main makes the runtime abort instead. The test
// runs itself as a child that does what main does, then panics on a
// goroutine.
func TestGoroutinePanicIsNotExit2(t *testing.T) {
	if os.Getenv("BERTH_TEST_GOROUTINE_PANIC") == "1" {
		// No core file from the abort.
		_ = syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
		crashWithoutExit2()
		go func() { panic("boom on a goroutine") }()
		time.Sleep(time.Minute) // the panic ends the process first
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestGoroutinePanicIsNotExit2$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BERTH_TEST_GOROUTINE_PANIC=1", "GOTRACEBACK=")
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v, want it to crash\n%s", err, errb.String())
	}
	if ee.ExitCode() == exitChanges {
		t.Fatalf("a goroutine panic exited 2:\n%s", errb.String())
	}
	ws, _ := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("child ended with %v, want SIGABRT", ee)
	}
	if !strings.Contains(errb.String(), "panic: boom on a goroutine") {
		t.Errorf("stderr lacks the panic:\n%s", errb.String())
	}
}
