package live

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-gitops/berth/lxd"
)

// cloudInitWait waits for cloud-init to finish its boot stages where the
// image has it, and succeeds at once where it has not. A provision that
// needs the network or packages cloud-init sets up (an apt source, a
// user) would otherwise race it on a fresh instance.
var cloudInitWait = []string{"/bin/sh", "-c", "command -v cloud-init >/dev/null 2>&1 || exit 0; exec cloud-init status --wait 2>&1"}

// waitFirstBoot runs before an instance's first provision, within the
// provision's context: it waits until LXD can run a command in the
// instance (Exec retries the errors LXD gives an instance that has only
// just started) and until cloud-init, if any, is done. A cloud-init that
// reports an error is logged, not fatal: the provision may not need what
// failed, and its own output then says what it missed.
func (s *System) waitFirstBoot(ctx context.Context, name string) error {
	res, err := s.LXD.ExecOutput(ctx, name, lxd.ExecRequest{Command: cloudInitWait}, 2048)
	if err != nil {
		return err
	}
	if res.Attempts > 1 {
		s.Logger.Info("instance ready for exec after retries", "instance", name, "attempts", res.Attempts)
	}
	if res.ExitCode != 0 {
		s.Logger.Warn("cloud-init reported a problem before the first provision; provisioning anyway",
			"instance", name, "exit", res.ExitCode, "output", outputTail(res.Output, res.Truncated))
	}
	return nil
}

// firstBootError words a failed waitFirstBoot for the provision's error.
func firstBootError(name string, err error) error {
	if errors.Is(err, lxd.ErrExecNotStarted) {
		return fmt.Errorf("provision of %s: the instance is not ready for exec: %w", name, err)
	}
	return fmt.Errorf("provision of %s: waiting for its first boot (cloud-init): %w", name, err)
}
