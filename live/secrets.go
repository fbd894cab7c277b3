package live

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/spec"
)

// Secrets reach the instance through an exec's standard input, never
// through LXD's file API, which writes into the instance's disk when it is
// stopped, nor through a command line, config key or label. The script
// refuses to write anywhere but on a tmpfs, and writes each file whole
// (a temporary name, then a rename). Messages name the destination, never
// the content.

// writeSecretScript writes its standard input to $3 with mode $4 and owner
// $5. When $1 is set, it first makes sure $1 is a tmpfs mount (berth's
// SecretRoot: a dedicated tmpfs, whether /run is one or not). $2 is the
// folder created for the file. A failure prints one line: why.
const writeSecretScript = `set -u
root=$1 dir=$2 file=$3 mode=$4 owner=$5
fail() { printf '%s\n' "$1"; exit 1; }
if [ -n "$root" ]; then
	[ -d "$root" ] || mkdir -m 0700 "$root" || fail "cannot create $root"
	if ! grep -qs " $root tmpfs " /proc/mounts; then
		mount -t tmpfs -o mode=0700,nosuid,nodev,noexec,size=64m berth-secrets "$root" 2>&1 || fail "cannot mount a tmpfs at $root"
	fi
fi
mkdir -p -m 0700 "$dir" || fail "cannot create $dir"
[ "$(stat -f -c %T "$dir")" = tmpfs ] || fail "$dir is not on a tmpfs: berth writes secrets only to memory, never to the instance's disk"
umask 077
tmp="$file.berth-new"
cat > "$tmp" && chown "$owner" "$tmp" && chmod "$mode" "$tmp" && mv -f "$tmp" "$file" || { rm -f "$tmp"; fail "cannot write $file"; }
`

// SecretWriteError is a secret that could not be written into an
// instance: where, and why (never what).
type SecretWriteError struct {
	Instance string
	Path     string
	Reason   string
}

func (e *SecretWriteError) Error() string {
	return fmt.Sprintf("%s: secret %s: %s", e.Instance, spec.EscapeText(e.Path), e.Reason)
}

// Permanent: a tmpfs that cannot be mounted, or a destination on disk,
// stays so until the spec or the image changes.
func (e *SecretWriteError) Permanent() bool { return true }

// writeSecret writes value at file in instance name, on a tmpfs only.
func (s *System) writeSecret(ctx context.Context, name, root, file string, value []byte, mode, owner string) error {
	res, err := s.LXD.ExecOutput(ctx, name, lxd.ExecRequest{
		Command: []string{"/bin/sh", "-c", writeSecretScript, "berth-secret", root, path.Dir(file), file, mode, owner},
		Stdin:   bytes.NewReader(value),
	}, 4<<10)
	var oe *lxd.OperationError
	switch {
	case errors.As(err, &oe):
		return &SecretWriteError{Instance: name, Path: file, Reason: spec.EscapeText(oe.Err)}
	case err != nil:
		return fmt.Errorf("%s: write secret %s: %w", name, spec.EscapeText(file), err)
	case res.ExitCode != 0:
		line, _, _ := bytes.Cut(res.Output, []byte("\n"))
		return &SecretWriteError{Instance: name, Path: file, Reason: spec.EscapeText(string(line))}
	}
	return nil
}

// deliverSecrets writes the app container's secret files onto berth's
// tmpfs in the instance, in the folder of the container hash, where the
// container's mounts point (engine.SecretSource). It runs before every
// ensure: after a reboot the tmpfs is empty, and the container cannot
// start until its files are back.
func (s *System) deliverSecrets(ctx context.Context, name string, app spec.App) error {
	c := app.Spec.Container
	if len(c.SecretFiles) == 0 {
		return nil
	}
	hash := c.Hash()
	for _, f := range c.SecretFiles {
		if f.MAC == "" {
			// Loaded without keys (a bug in the caller): an empty file in
			// place of the secret would be worse than no container.
			return &SecretWriteError{Instance: name, Path: f.Target, Reason: "the secret was not decrypted"}
		}
		src := engine.SecretSource(app.Metadata.Name, hash, f.Target)
		if err := s.writeSecret(ctx, name, engine.SecretRoot, src, f.Value.Reveal(), f.Mode, f.Owner); err != nil {
			return err
		}
	}
	return nil
}

// removeOldSecrets removes the secret folders of the app's other container
// hashes, once the current container runs: the replaced container's
// files are no longer read by anything.
func (s *System) removeOldSecrets(ctx context.Context, name string, app spec.App) {
	c := app.Spec.Container
	if len(c.SecretFiles) == 0 {
		return
	}
	keep := engine.SecretDir(app.Metadata.Name, c.Hash())
	const script = `for d in "$1"/*; do [ "$d" = "$2" ] || rm -rf -- "$d"; done`
	_, err := s.LXD.ExecOutput(ctx, name, lxd.ExecRequest{Command: []string{"/bin/sh", "-c", script, "berth-secrets-clean", path.Dir(keep), keep}}, 1<<10)
	if err != nil {
		// Left for the next ensure: they are on tmpfs either way.
		s.Logger.Debug("old secret files not removed", "instance", name, "err", err)
	}
}

// pushSecretFile writes a secret provision file: like every secret, only
// onto a tmpfs, berth's own when the path is under engine.SecretRoot.
func (s *System) pushSecretFile(ctx context.Context, name string, f spec.ProvisionFile) error {
	if f.MAC == "" {
		return &SecretWriteError{Instance: name, Path: f.Path, Reason: "the secret was not decrypted"}
	}
	root := ""
	if strings.HasPrefix(f.Path, engine.SecretRoot+"/") {
		root = engine.SecretRoot
	}
	return s.writeSecret(ctx, name, root, f.Path, f.Value.Reveal(), f.Mode, f.Owner)
}
