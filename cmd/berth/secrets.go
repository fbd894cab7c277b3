package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/secrets"
)

func newSecretsCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Check, rotate and edit SOPS-encrypted secret files (age)",
		Long: `Secrets are SOPS files encrypted to age recipients: the sops CLI, Flux and
doco-cd read the same files. The age keys come from --age-key-file (repeatable,
$BERTH_AGE_KEY_FILE), never from a flag's value.`,
	}
	cmd.AddCommand(newSecretsCheckCmd(g), newSecretsRotateCmd(g), newSecretsEditCmd(g))
	return cmd
}

// readSOPSFile reads at most one byte over secrets.MaxFileSize, which
// Inspect and Open then refuse with the limit in the message.
func readSOPSFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, secrets.MaxFileSize+1))
}

func newSecretsCheckCmd(g *globalOptions) *cobra.Command {
	var dir string
	var recipients []string
	cmd := &cobra.Command{
		Use:   "check [PATH...]",
		Short: "List encrypted files and their recipients; fail on files not encrypted to the expected set",
		Long: `Check lists the SOPS-encrypted files under PATH (default: the spec folder,
--dir, of the current directory) with their age recipients. With the expected
recipients (--age-recipient, or the keys of --age-key-file) it exits 1 naming
each file that is not encrypted to exactly that set: a CI gate for a rotation
that must not miss a file. A file named *.enc.* (or given by name) that is not
encrypted is an error too: a plaintext secret about to be committed.`,
		Example: `  berth secrets check --dir apps --age-recipient age1...
  BERTH_AGE_KEY_FILE=~/.config/berth/age.txt berth secrets check`,
		RunE: func(cmd *cobra.Command, args []string) error {
			want, err := expectedRecipients(recipients, g.ageKeyFiles)
			if err != nil {
				return err
			}
			roots := args
			if len(roots) == 0 {
				roots = []string{filepath.Join(".", dir)}
			}
			return secretsCheck(cmd.OutOrStdout(), roots, want)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "folder of the specs inside the current directory")
	cmd.Flags().StringArrayVar(&recipients, "age-recipient", nil, "an expected age recipient (age1... or age1pq1...); repeatable")
	return cmd
}

// expectedRecipients is the set a check compares with: the recipients
// given, else those of the key files, else none (list only).
func expectedRecipients(given, keyFiles []string) ([]string, error) {
	for _, r := range given {
		if _, err := secrets.ParseRecipient(r); err != nil {
			return nil, fmt.Errorf("--age-recipient: %v", err)
		}
	}
	if len(given) > 0 || len(keyFiles) == 0 {
		return given, nil
	}
	k, err := secrets.LoadKeys(keyFiles...)
	if err != nil {
		return nil, err
	}
	return k.Recipients(), nil
}

type checkedFile struct {
	path       string
	md         *secrets.Metadata
	err        error
	diff       string
	mustSecret bool
}

func secretsCheck(w io.Writer, roots []string, want []string) error {
	var files []checkedFile
	for _, root := range roots {
		found, err := findSecretFiles(root)
		if err != nil {
			return err
		}
		files = append(files, found...)
	}
	var bad []string
	for _, f := range files {
		switch {
		case f.err != nil:
			fmt.Fprintf(w, "%s: %v\n", f.path, f.err)
			bad = append(bad, f.path)
			continue
		case len(want) > 0:
			f.diff = recipientDiff(f.md.Recipients, want)
		}
		status := "ok"
		if f.diff != "" {
			status = "NOT the expected recipients: " + f.diff
			bad = append(bad, f.path)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", f.path, f.md.Format, strings.Join(shortRecipients(f.md.Recipients), ", "), status)
	}
	if len(files) == 0 {
		fmt.Fprintf(w, "no SOPS-encrypted file under %s\n", strings.Join(roots, ", "))
	}
	if len(bad) > 0 {
		return &exitCodeError{code: exitError, err: fmt.Errorf("%d file(s) fail the check: %s", len(bad), strings.Join(bad, ", "))}
	}
	return nil
}

// findSecretFiles walks root (or takes it, a file) for SOPS files. A file
// that is not SOPS is skipped unless its name says it should be (*.enc.*)
// or it was named on the command line.
func findSecretFiles(root string) ([]checkedFile, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []checkedFile{inspectFile(root, true)}, nil
	}
	var out []checkedFile
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f := inspectFile(p, strings.Contains(d.Name(), ".enc."))
		if f.md != nil || f.mustSecret {
			out = append(out, f)
		}
		return nil
	})
	return out, err
}

func inspectFile(path string, must bool) checkedFile {
	f := checkedFile{path: path, mustSecret: must}
	data, err := readSOPSFile(path)
	if err != nil {
		f.err = err
		return f
	}
	md, err := secrets.Inspect(path, data)
	switch {
	case err == nil:
		f.md = md
	case must:
		// The error names the file already.
		f.err = errors.New(strings.TrimPrefix(err.Error(), path+": "))
	}
	return f
}

// recipientDiff says how have differs from want, "" when it does not.
func recipientDiff(have, want []string) string {
	missing, extra := setMinus(want, have), setMinus(have, want)
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(shortRecipients(missing), ", "))
	}
	if len(extra) > 0 {
		parts = append(parts, "extra "+strings.Join(shortRecipients(extra), ", "))
	}
	return strings.Join(parts, "; ")
}

func setMinus(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}

// shortRecipients abbreviates post-quantum recipients (some 2000
// characters) to their start and end, enough to tell them apart.
func shortRecipients(rs []string) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		if len(r) > 80 {
			r = r[:20] + "..." + r[len(r)-12:]
		}
		out[i] = r
	}
	return out
}

func newSecretsRotateCmd(g *globalOptions) *cobra.Command {
	var add, remove []string
	cmd := &cobra.Command{
		Use:   "rotate --add R --remove R FILE...",
		Short: "Re-encrypt SOPS files in place for a new set of age recipients",
		Long: `Rotate opens each FILE with the --age-key-file keys and encrypts it again to
its recipients plus --add minus --remove, values unchanged. Adding only
re-wraps the file's data key (the values' ciphertext stays, the diff is the
metadata); removing draws a new data key, so the removed key cannot read later
edits. Every file is opened and re-encrypted before any is written; each is
replaced atomically.`,
		Example: `  berth secrets rotate --age-key-file old.txt --add age1new... apps/secrets/*.enc.yaml
  berth secrets rotate --age-key-file new.txt --remove age1old... apps/secrets/*.enc.yaml`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(add) == 0 && len(remove) == 0 {
				return errors.New("nothing to do: give --add and/or --remove")
			}
			for _, r := range add {
				if _, err := secrets.ParseRecipient(r); err != nil {
					return fmt.Errorf("--add: %v", err)
				}
			}
			keys, err := secrets.LoadKeys(g.ageKeyFiles...)
			if err != nil {
				return err
			}
			return secretsRotate(cmd.OutOrStdout(), args, keys, add, remove)
		},
	}
	cmd.Flags().StringArrayVar(&add, "add", nil, "age recipient to add (age1... or age1pq1...); repeatable")
	cmd.Flags().StringArrayVar(&remove, "remove", nil, "age recipient to remove; repeatable")
	return cmd
}

func secretsRotate(w io.Writer, files []string, keys *secrets.Keys, add, remove []string) error {
	out := make([][]byte, len(files))
	for i, path := range files {
		data, err := readSOPSFile(path)
		if err != nil {
			return err
		}
		doc, err := secrets.Open(path, data, keys)
		if err != nil {
			return err
		}
		have := doc.Recipients()
		want := append(setMinus(have, remove), setMinus(add, have)...)
		if len(want) == 0 {
			return fmt.Errorf("%s: removing %s leaves no recipient", path, strings.Join(shortRecipients(remove), ", "))
		}
		if recipientDiff(have, want) == "" {
			fmt.Fprintf(w, "%s: already encrypted to that set\n", path)
			continue
		}
		if out[i], err = doc.Seal(want, len(setMinus(have, want)) > 0); err != nil {
			return err
		}
	}
	for i, path := range files {
		if out[i] == nil {
			continue
		}
		if err := writeFileAtomic(path, out[i]); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: re-encrypted\n", path)
	}
	return nil
}

// writeFileAtomic replaces path by data through a temporary file in the
// same folder, synced and renamed over it: a crash leaves the old file or
// the new one, never half of one. The mode of the old file is kept.
func writeFileAtomic(path string, data []byte) error {
	mode := fs.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func newSecretsEditCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "edit FILE",
		Short: "Decrypt a SOPS file to a private temporary file, run $EDITOR, encrypt it again",
		Long: `Edit decrypts FILE with the --age-key-file keys into a 0600 file in a private
(0700) temporary folder, runs $EDITOR on it (vi when unset), and encrypts the
result again to the same recipients with the same data key (unchanged values
keep their ciphertext). The temporary file is overwritten with zeros and
deleted afterwards, also when the editor or the encryption fails.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := secrets.LoadKeys(g.ageKeyFiles...)
			if err != nil {
				return err
			}
			return secretsEdit(cmd, args[0], keys)
		},
	}
}

func secretsEdit(cmd *cobra.Command, path string, keys *secrets.Keys) error {
	data, err := readSOPSFile(path)
	if err != nil {
		return err
	}
	doc, err := secrets.Open(path, data, keys)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "berth-secret-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// The same name, for the editor's syntax highlighting.
	tmp := filepath.Join(dir, filepath.Base(path))
	plain := doc.Whole().Reveal()
	defer wipeFile(tmp)
	err = os.WriteFile(tmp, plain, 0o600)
	clear(plain)
	if err != nil {
		return err
	}
	if err := runEditor(cmd, tmp); err != nil {
		return err
	}
	edited, err := readSOPSFile(tmp)
	if err != nil {
		return err
	}
	defer clear(edited)
	if doc.Whole().Equal(secrets.NewValue(edited)) {
		fmt.Fprintf(cmd.OutOrStdout(), "%s: unchanged\n", path)
		return nil
	}
	nd, err := doc.Replace(edited)
	if err != nil {
		return err
	}
	out, err := nd.Seal(doc.Recipients(), false)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, out); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s: re-encrypted\n", path)
	return nil
}

// runEditor runs $EDITOR (which may hold arguments, as git allows) on
// path, on the command's terminal.
func runEditor(cmd *cobra.Command, path string) error {
	editor := os.Getenv("EDITOR")
	if editor == "" {
		editor = "vi"
	}
	c := exec.CommandContext(cmd.Context(), "/bin/sh", "-c", editor+` "$1"`, "editor", path)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
	if err := c.Run(); err != nil {
		return fmt.Errorf("$EDITOR (%s) failed: %v; the file is unchanged", editor, err)
	}
	return nil
}

// wipeFile overwrites path with zeros, syncs and removes it: the
// plaintext must not stay in the temporary folder's blocks longer than the
// edit.
func wipeFile(path string) {
	if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
		if st, err := f.Stat(); err == nil {
			_, _ = f.Write(make([]byte, st.Size()))
			_ = f.Sync()
		}
		f.Close()
	}
	_ = os.Remove(path)
}
