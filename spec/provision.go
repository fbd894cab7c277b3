package spec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// provision reads spec.system.provision.
func (d *decoder) provision(n *yaml.Node) *Provision {
	p := Provision{Timeout: DefaultProvisionTimeout}
	d.provisionPaths = map[string]int{}
	problems := len(d.diags)
	if !object(d, n, provisionFields, &p) {
		return nil
	}
	// Files or run that were written but are wrong have their own problem.
	if len(p.Files) == 0 && len(p.Run) == 0 && len(d.diags) == problems {
		at := n
		if len(d.path) > 0 && d.path[len(d.path)-1].key != nil {
			at = d.path[len(d.path)-1].key
		}
		d.errorf(at, "a provision needs files to copy, a command to run, or both")
	}
	return &p
}

// provisionFiles reads provision.files: at most MaxProvisionFiles, each
// destination written once.
func (d *decoder) provisionFiles(n *yaml.Node) []ProvisionFile {
	items, _ := d.list(n)
	if len(items) > MaxProvisionFiles {
		d.errorf(d.resolve(n), "has %d files; a provision may copy at most %d", len(items), MaxProvisionFiles)
		return nil
	}
	var out []ProvisionFile
	for i, item := range items {
		d.pushIndex(i, item)
		f := ProvisionFile{Owner: DefaultFileOwner}
		ok := object(d, item, provisionFileFields, &f)
		if f.Mode == "" {
			f.Mode = DefaultFileMode
			if f.Secret {
				f.Mode = DefaultSecretMode
			}
		}
		if ok && f.Secret {
			d.secretProvisionFile(item, &f)
		}
		if ok && f.Path != "" && checkInstancePath(f.Path) == "" {
			if first, dup := d.provisionPaths[f.Path]; dup {
				d.push("path", nil)
				d.errorf(d.member(item, "path"), "path %q is already written by files[%d]", f.Path, first)
				d.pop()
			} else {
				d.provisionPaths[f.Path] = i
			}
		}
		out = append(out, f)
		d.pop()
	}
	return out
}

// provisionRun reads provision.run: a command in exec form. An explicit
// empty list is no command.
func (d *decoder) provisionRun(n *yaml.Node) []string {
	run, ok := d.stringList(n)
	if !ok || len(run) == 0 {
		return nil
	}
	items, _ := d.list(n)
	for i, arg := range run {
		if arg == "" {
			d.pushIndex(i, items[i])
			d.errorf(d.resolve(items[i]), "must not be empty: run is a command and its arguments, like [/bin/sh, /srv/provision.sh]")
			d.pop()
		}
	}
	return run
}

// provisionEvery reads provision.every: 0 (off) or a period from
// MinProvisionEvery to MaxDuration.
func (d *decoder) provisionEvery(n *yaml.Node) Duration {
	r := d.resolve(n)
	if r == nil {
		return 0
	}
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!str" {
		d.errorf(r, `expected a duration like "24h", or "0s" for never, got %s`, describe(r))
		return 0
	}
	if isZeroDuration(r.Value) {
		return 0
	}
	v, msg := parseDuration(r.Value, MinProvisionEvery, MaxDuration)
	if msg != "" {
		if strings.HasPrefix(strings.TrimSpace(r.Value), "-") {
			msg = fmt.Sprintf("duration must be 0s (never) or more, got %q", r.Value)
		}
		d.errorf(r, "%s", msg)
		return 0
	}
	return v
}

// containerless checks, once the whole app is read, what depends on
// whether it has a container.
func (d *decoder) containerless() {
	if d.hasContainer && d.systemPorts != nil {
		d.errorAt(d.systemPorts, "system.ports is for an app without a container; this app has one, so declare its ports in spec.container.ports")
	}
	if !d.hasContainer && d.restartContainer != nil {
		d.errorAt(d.restartContainer, "restartContainer needs an app container, and this app has none (no spec.container)")
	}
}

var (
	// fileModeRE is an octal permission mode of 3 or 4 digits. Its value
	// is checked apart: at most 0777.
	fileModeRE = regexp.MustCompile(`^[0-7]{3,4}$`)
	// fileOwnerRE is a numeric "uid:gid".
	fileOwnerRE = regexp.MustCompile(`^[0-9]+:[0-9]+$`)
)

// maxFileMode is the highest mode a provision file may have: permission
// bits only, as LXD's file API sets no setuid, setgid or sticky bit.
const maxFileMode = 0o777

// checkFileMode checks a provision file's mode and returns it with 4
// digits, so that "644" and "0644" are one value (and one hash).
// keptStr decodes v as a string and reports check's message about it at
// v; the string is kept (ok) whenever it decodes, valid or not, so later
// checks see what was written.
func (d *decoder) keptStr(v *yaml.Node, check func(string) string) (string, bool) {
	s, ok := d.str(v, "")
	if ok {
		if msg := check(s); msg != "" {
			d.errorf(d.resolve(v), "%s", msg)
		}
	}
	return s, ok
}

// checkedStr decodes v as a string and passes it through check, which
// returns the value to keep or a message; a message is reported at v.
func checkedStr(d *decoder, v *yaml.Node, hint string, check func(string) (string, string)) (string, bool) {
	s, ok := d.str(v, hint)
	if !ok {
		return "", false
	}
	out, msg := check(s)
	if msg != "" {
		d.errorf(d.resolve(v), "%s", msg)
		return "", false
	}
	return out, true
}

func checkFileMode(s string) (string, string) {
	if !fileModeRE.MatchString(s) {
		return "", fmt.Sprintf(`mode must be an octal permission string like "0644" or "0755" (at most "0777"), got %q`, s)
	}
	v, _ := strconv.ParseUint(s, 8, 32)
	if v > maxFileMode {
		return "", fmt.Sprintf(`mode %q has setuid, setgid or sticky bits, which cannot be set through LXD's file API: use at most "0777" here and set them in the provision's command (chmod %s ...)`, s, s)
	}
	return fmt.Sprintf("%04o", v), ""
}

// checkFileOwner checks a provision file's owner and returns it without
// leading zeros.
func checkFileOwner(s string) (string, string) {
	const want = `owner must be numeric "uid:gid" like "0:0" or "1000:1000"`
	if !fileOwnerRE.MatchString(s) {
		return "", fmt.Sprintf("%s, got %q", want, s)
	}
	u, g, _ := strings.Cut(s, ":")
	uid, err1 := strconv.ParseUint(u, 10, 64)
	gid, err2 := strconv.ParseUint(g, 10, 64)
	if err1 != nil || err2 != nil || uid > MaxID || gid > MaxID {
		return "", fmt.Sprintf("owner %q is outside an unprivileged container's default id map: uid and gid must be from 0 to %d", s, MaxID)
	}
	return fmt.Sprintf("%d:%d", uid, gid), ""
}

// checkInstancePath checks a provision file's destination: an absolute,
// clean path that is not the root.
func checkInstancePath(p string) string {
	switch {
	case !path.IsAbs(p):
		return fmt.Sprintf("must be an absolute path in the instance, got %q", p)
	case p == "/":
		return `must be a file's path, not "/"`
	case path.Clean(p) != p:
		return fmt.Sprintf("must be a clean path (no \"//\", \".\" or \"..\" parts, no trailing \"/\"): %q, maybe %q", p, path.Clean(p))
	case strings.ContainsRune(p, 0):
		return "must not hold a NUL byte"
	}
	return ""
}

// checkRepoPath checks a provision file's source: a slash-separated path
// relative to the repository root that cannot leave it.
func checkRepoPath(p string) string {
	switch {
	case p == "":
		return "must be the path of a file in the repository, relative to its root"
	case strings.HasPrefix(p, "/"):
		return fmt.Sprintf("must be relative to the repository root, not absolute: %q", p)
	case strings.ContainsRune(p, 0):
		return "must not hold a NUL byte"
	}
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "":
			return fmt.Sprintf("must not have empty parts (\"//\" or a trailing \"/\"): %q", p)
		case ".", "..":
			return fmt.Sprintf("must not have %q parts: provision files are read from inside the repository, got %q", part, p)
		case ".git":
			return fmt.Sprintf("must not be in a .git folder, which is Git's, not the repository's content: %q", p)
		}
	}
	return ""
}

// provisionSource checks a provision file's source and reads it, setting
// the file's Content and Digest.
func (d *decoder) provisionSource(v *yaml.Node, f *ProvisionFile) {
	at := d.resolve(v)
	if at == nil {
		return
	}
	if msg := checkRepoPath(f.Source); msg != "" {
		d.errorf(at, "%s", msg)
		return
	}
	if d.repo.fsys == nil {
		d.errorf(at, "cannot read %q: provision files are read from the repository, and none was given (load the spec tree from a repository or a folder, not a single file)", f.Source)
		return
	}
	data, msg := d.repo.read(d.ctx, f.Source)
	if msg != "" {
		d.errorf(at, "%s", msg)
		return
	}
	f.Content = data
	sum := sha256.Sum256(data)
	f.Digest = hex.EncodeToString(sum[:])
	if d.opts.NotInGit != nil {
		if why := d.opts.NotInGit(f.Source); why != "" {
			d.warnf(at, "provision file %q %s", f.Source, why)
		}
	}
}

// provisionReader reads the provision files of one load from the
// repository: each distinct file once (an app may be read many times
// through anchors, and apps may share files), within one budget.
type provisionReader struct {
	docs map[string]openedSecret // secret files decrypted, by name
	// The owner's secret salt, asked for once.
	saltDone  bool
	saltValue []byte
	saltMsg   string
	fsys      fs.FS
	bytes     int64 // read so far, against MaxProvisionTreeSize
	files     map[string]provisionRead
	dirs      map[string]map[string]fs.DirEntry // ReadDir results by folder
}

type provisionRead struct {
	data []byte
	msg  string
}

func newProvisionReader(fsys fs.FS) *provisionReader {
	return &provisionReader{fsys: fsys, files: map[string]provisionRead{}, dirs: map[string]map[string]fs.DirEntry{}}
}

// read returns a file's content, or the problem with it. name has passed
// checkRepoPath.
func (p *provisionReader) read(ctx context.Context, name string) ([]byte, string) {
	if r, ok := p.files[name]; ok {
		return r.data, r.msg
	}
	data, msg := p.readOnce(ctx, name)
	if ctx.Err() == nil {
		// A cancelled load ends here anyway; its error is not the file's.
		p.files[name] = provisionRead{data, msg}
	}
	return data, msg
}

func (p *provisionReader) readOnce(ctx context.Context, name string) ([]byte, string) {
	// Each part of the path is looked up in its folder's listing, which
	// gives the entry's own type: a symlink is seen as one and never
	// followed, from Git objects or on disk, whatever fs.Stat would do.
	parts := strings.Split(name, "/")
	dir := "."
	var de fs.DirEntry
	for i, part := range parts {
		if err := ctx.Err(); err != nil {
			return nil, "not read: " + err.Error()
		}
		entries, err := p.readDir(dir)
		if err != nil {
			return nil, fmt.Sprintf("cannot read folder %q of the repository: %s", dir, ioReason(err))
		}
		de = entries[part]
		sofar := path.Join(dir, part)
		switch {
		case de == nil:
			return nil, fmt.Sprintf("no file %q in the repository at this revision", name)
		case de.Type()&fs.ModeSymlink != 0:
			return nil, fmt.Sprintf("%q is a symbolic link; berth never follows symlinks in provision files: put the file or folder itself there", sofar)
		case i < len(parts)-1 && !de.IsDir():
			return nil, fmt.Sprintf("no file %q in the repository at this revision: %q is not a folder", name, sofar)
		}
		dir = sofar
	}
	switch {
	case de.IsDir():
		return nil, fmt.Sprintf("%q is a folder; only regular files are copied by a provision", name)
	case !de.Type().IsRegular():
		return nil, fmt.Sprintf("%q %s", name, strings.Replace(notRegular(de.Type()), "read as specs", "copied by a provision", 1))
	}
	info, err := de.Info()
	if err != nil {
		return nil, fmt.Sprintf("cannot read %q: %s", name, ioReason(err))
	}
	if info.Size() > MaxProvisionFileSize {
		return nil, fmt.Sprintf("%q is too large: %d bytes, a provision file may have at most %d MiB", name, info.Size(), MaxProvisionFileSize>>20)
	}
	if p.bytes+info.Size() > MaxProvisionTreeSize {
		return nil, fmt.Sprintf("%q not read: the provision files of the spec tree together are over their %d MiB budget", name, MaxProvisionTreeSize>>20)
	}
	data, err := readFile(ctx, p.fsys, name, MaxProvisionFileSize)
	switch {
	case ctx.Err() != nil:
		return nil, "not read: " + ctx.Err().Error()
	case errors.Is(err, errTooLarge):
		return nil, fmt.Sprintf("%q is too large: a provision file may have at most %d MiB", name, MaxProvisionFileSize>>20)
	case errors.Is(err, errNotRegular):
		return nil, fmt.Sprintf("%q is not a regular file; only regular files are copied by a provision", name)
	case err != nil:
		return nil, fmt.Sprintf("cannot read %q: %s", name, ioReason(err))
	}
	if p.bytes+int64(len(data)) > MaxProvisionTreeSize {
		return nil, fmt.Sprintf("%q not read: the provision files of the spec tree together are over their %d MiB budget", name, MaxProvisionTreeSize>>20)
	}
	p.bytes += int64(len(data))
	return data, ""
}

// readDir lists a folder once per load, by entry name.
func (p *provisionReader) readDir(dir string) (map[string]fs.DirEntry, error) {
	if m, ok := p.dirs[dir]; ok {
		return m, nil
	}
	entries, err := fs.ReadDir(p.fsys, dir)
	if err != nil {
		return nil, err
	}
	m := make(map[string]fs.DirEntry, len(entries))
	for _, e := range entries {
		m[e.Name()] = e
	}
	p.dirs[dir] = m
	return m, nil
}
