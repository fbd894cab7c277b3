package spec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/berth-gitops/berth/secrets"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Options tunes what the loader accepts. The zero value is the strict,
// safe default.
type Options struct {
	// AllowPrivileged allows what breaks a system container's isolation
	// from the host: security.privileged: "true", raw.lxc, raw.idmap and
	// an explicit security.idmap.isolated: "false" in system.config, and
	// devices of type unix-char, unix-block and unix-hotplug. A privileged
	// container is root on the host, so this is opt-in.
	AllowPrivileged bool
	// RequireDigest makes a container image without @sha256:<digest> an
	// error, so that what runs is exactly what was reviewed in Git.
	RequireDigest bool
	// Files is the root of the repository the specs come from, at the same
	// revision: the repository's root, not the spec folder, since
	// provision files (system.provision.files[].source) are named relative
	// to it. Every part of such a path is looked up in its folder's
	// ReadDir listing, and an entry of type fs.ModeSymlink anywhere is
	// refused, never followed; the FS should refuse to open a link too,
	// as source.Repo.TreeFS (a commit) and source.DirFS (a work tree) do.
	// nil means there is no repository (LoadBytes): a provision with files
	// is then an error.
	Files fs.FS
	// NotInGit, when set, is asked about each provision file read from
	// Files, by its source path; a non-empty answer says why a commit
	// would not hold it (source.Tracked.NotInGit) and is a warning at
	// that source. Set it when Files is a Git work tree on disk, which
	// holds files that the commits plan and the daemon read do not.
	NotInGit func(source string) string
	// Secrets, when set, opens the secrets the specs reference: each is
	// decrypted in memory and its MAC computed (SecretFile.Value, MAC),
	// and an app whose secret no key opens is invalid, so held. nil (as
	// validate and diff load) only inspects them: each must exist, be
	// SOPS-encrypted and hold its key, and nothing is decrypted.
	Secrets *SecretKeys
}

// SecretKeys are what a load opens secrets with.
type SecretKeys struct {
	// Keys are the age identities (--age-key-file).
	Keys *secrets.Keys
	// Salt returns the key of the HMAC of each value: the owner's salt,
	// kept in LXD (live.SecretSalt), so that hashes and labels say when a
	// secret changed and nothing about what it is. It is called once per
	// load, and only when a spec references a secret.
	Salt func() ([]byte, error)
}

// Result is everything one load found.
type Result struct {
	// Apps are the valid apps, sorted by name, with defaults applied and
	// Origin set.
	Apps []App
	// Diagnostics are every problem of the whole tree.
	Diagnostics Diagnostics
	// InvalidApps are the sorted names of apps with at least one problem
	// (where a valid name could be read). The reconciler holds them: it keeps
	// their last applied state and never prunes them.
	InvalidApps []string
	// Unparsable are the files (relative, slash-separated) whose apps
	// cannot be known: not YAML at all, over a limit (MaxFileSize and the
	// others), unreadable, not a regular file (a symlink, a FIFO), or a
	// folder that is a Git submodule. The
	// reconciler must not prune anything in that run.
	Unparsable []string
	// Unidentified are the files holding an invalid document whose app
	// name could not be read (e.g. a misspelt metadata.name). That app is
	// neither applied nor held, so, as for Unparsable, nothing may be
	// pruned: its instances would look like those of a removed app.
	Unidentified []string
	// Warnings are problems that leave the specs valid, with the same
	// positions as Diagnostics: a provision file that is on disk but not
	// in Git (Options.NotInGit).
	Warnings Diagnostics
}

// Load reads every *.yaml and *.yml file under fsys, skipping hidden files
// and directories (.git, editor backups). Problems with the specs are in
// the Result; the error is only for failing to read the root of the tree or
// for ctx ending, which is checked between entries, between documents and
// while a file is read.
//
// Only regular files are specs. A symlink anywhere in the tree is an error
// on that entry and is never followed, so what is read from disk is what
// Git holds: a Git fs.FS reports a committed link with fs.ModeSymlink. A
// named pipe, socket or device with a YAML name is an error and is never
// opened. A folder with a .git of its own (a Git submodule, which a
// commit holds as a bare pointer) is an error on that folder and is not
// read. Such entries, files over a limit (see MaxFileSize) and files that
// cannot be read are in Result.Unparsable: their apps cannot be known.
func Load(ctx context.Context, fsys fs.FS, opts Options) (*Result, error) {
	l := newLoader(opts)
	err := fs.WalkDir(fsys, ".", func(name string, de fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			if name == "." {
				return err
			}
			// A directory or entry that cannot be read may hold apps.
			l.fileProblem(name, "cannot be read: "+ioReason(err))
			return nil
		}
		if name != "." && strings.HasPrefix(de.Name(), ".") {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if name != "." && !utf8.ValidString(de.Name()) && (de.IsDir() || isYAMLFile(name)) {
			l.fileProblem(name, badName(de.Name()))
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.IsDir() {
			if name != "." && isOtherRepository(fsys, name) {
				l.fileProblem(name, submoduleProblem)
				return fs.SkipDir
			}
			return nil
		}
		return l.entry(ctx, fsys, name, de)
	})
	if err != nil {
		return nil, fmt.Errorf("spec: reading spec tree: %w", err)
	}
	return l.result(), nil
}

// badName says why an entry whose name is not UTF-8 cannot be read: an
// fs.FS (io/fs.ValidPath) cannot name it, so opening it fails with a bare
// "invalid argument". The name is escaped, as it is no text.
func badName(name string) string {
	return fmt.Sprintf(`cannot be read: its name "%s" is not valid UTF-8, and berth reads files by UTF-8 names only; rename it`, EscapeText(name))
}

// submoduleProblem is the problem of a folder that is another repository.
// A commit holds a submodule as a bare pointer (a gitlink), not its
// files: reading them from disk, or skipping them in Git, would make the
// work tree and the commit hold different apps, and a skipped folder's
// apps look removed, so pruned. It is refused as a symlink is, which
// stops pruning.
const submoduleProblem = "is a Git submodule (another repository, with a .git of its own): a commit holds no files of it, so berth never reads specs from it; commit the files to this repository instead"

// isOtherRepository reports whether the folder name holds a .git: a
// submodule or an embedded repository on disk, or a submodule in a Git
// spec FS, which lists one as a folder holding only a .git entry.
func isOtherRepository(fsys fs.FS, name string) bool {
	_, err := fs.Stat(fsys, path.Join(name, ".git"))
	return err == nil
}

// LoadDir loads the spec tree rooted at dir. Diagnostics name files
// relative to dir.
func LoadDir(ctx context.Context, dir string, opts Options) (*Result, error) {
	return Load(ctx, os.DirFS(dir), opts)
}

// LoadBytes loads one file's contents as if it were the file name, with the
// same limits as Load.
func LoadBytes(name string, data []byte, opts Options) (*Result, error) {
	l := newLoader(opts)
	if len(data) > MaxFileSize {
		l.fileProblem(name, tooLarge(int64(len(data))))
		return l.result(), nil
	}
	if err := l.file(context.Background(), name, data); err != nil {
		return nil, err
	}
	return l.result(), nil
}

// entry handles one non-directory entry of the tree.
func (l *loader) entry(ctx context.Context, fsys fs.FS, name string, de fs.DirEntry) error {
	typ := de.Type()
	switch {
	case typ&fs.ModeSymlink != 0:
		// Never followed, never read: its target may be outside the
		// repository, and its content must not reach any message.
		l.fileProblem(name, "is a symbolic link; berth never follows symlinks in the spec tree: put the file or directory itself here")
		return nil
	case !isYAMLFile(name):
		return nil
	case !typ.IsRegular():
		l.fileProblem(name, notRegular(typ))
		return nil
	}
	if l.files >= MaxFiles {
		l.fileProblem(name, fmt.Sprintf("not read: the spec tree has more than %d spec files (the limit)", MaxFiles))
		return nil
	}
	l.files++
	info, err := de.Info()
	if err != nil {
		l.fileProblem(name, "cannot be read: "+ioReason(err))
		return nil
	}
	if !info.Mode().IsRegular() {
		l.fileProblem(name, notRegular(info.Mode()))
		return nil
	}
	if info.Size() > MaxFileSize {
		l.fileProblem(name, tooLarge(info.Size()))
		return nil
	}
	if l.bytes+info.Size() > MaxTreeSize {
		l.fileProblem(name, treeTooLarge)
		return nil
	}
	data, err := readFile(ctx, fsys, name, MaxFileSize)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, errTooLarge):
		l.fileProblem(name, tooLarge(-1))
		return nil
	case errors.Is(err, errNotRegular):
		l.fileProblem(name, "is not a regular file; only regular files are read as specs")
		return nil
	case err != nil:
		l.fileProblem(name, "cannot be read: "+ioReason(err))
		return nil
	}
	if l.bytes+int64(len(data)) > MaxTreeSize {
		l.fileProblem(name, treeTooLarge)
		return nil
	}
	l.bytes += int64(len(data))
	return l.file(ctx, name, data)
}

const treeTooLarge = "not read: the spec files together are over the 16 MiB budget of a spec tree"

// tooLarge says a file is over MaxFileSize; size < 0 when only that is known.
func tooLarge(size int64) string {
	if size < 0 {
		return "is too large: a spec file may have at most 1 MiB"
	}
	return fmt.Sprintf("is too large: %d bytes, a spec file may have at most 1 MiB (%d bytes)", size, MaxFileSize)
}

func notRegular(m fs.FileMode) string {
	what := "not a regular file"
	switch t := m.Type(); {
	case t&fs.ModeNamedPipe != 0:
		what = "a named pipe (FIFO)"
	case t&fs.ModeSocket != 0:
		what = "a socket"
	case t&fs.ModeCharDevice != 0:
		what = "a character device"
	case t&fs.ModeDevice != 0:
		what = "a device"
	}
	return "is " + what + "; only regular files are read as specs"
}

// ioReason is the cause of a read error without the path, which the
// diagnostic already names (and which, for os.DirFS, is the full one).
func ioReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

var (
	errTooLarge   = errors.New("file too large")
	errNotRegular = errors.New("not a regular file")
)

// readFile reads at most limit bytes of a regular file, whatever its Stat
// said, checking ctx between chunks.
func readFile(ctx context.Context, fsys fs.FS, name string, limit int) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errNotRegular
	}
	r := io.LimitReader(f, int64(limit)+1)
	size := min(max(st.Size(), 0), int64(limit)) + 1
	data := make([]byte, 0, size)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(data) == cap(data) {
			data = append(data, 0)[:len(data)]
		}
		n, err := r.Read(data[len(data):min(cap(data), len(data)+64<<10)])
		data = data[:len(data)+n]
		if len(data) > limit {
			return data, errTooLarge
		}
		if err == io.EOF {
			return data, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func isYAMLFile(name string) bool {
	ext := strings.ToLower(path.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// loader accumulates documents across files; names are only checked for
// duplicates once the whole tree is read.
type loader struct {
	opts       Options
	docs       []*loadedDoc
	diags      Diagnostics
	warnings   Diagnostics
	unparsable []string
	files      int   // spec files read or refused for size
	bytes      int64 // bytes of the files read
	tree       budget
	provision  *provisionReader
	// treeSpent names the file where the tree's expansion budget ran out;
	// later files are not decoded.
	treeSpent string
}

func newLoader(opts Options) *loader {
	return &loader{opts: opts, tree: budget{left: MaxTreeExpansion, what: "spec tree", limit: MaxTreeExpansion},
		provision: newProvisionReader(opts.Files)}
}

type loadedDoc struct {
	app   App
	name  *yaml.Node // nil if no usable name was read
	valid bool
	// deps are the nodes of spec.dependsOn[].app, by index (nil where
	// none was read).
	deps []*yaml.Node
}

// fileProblem records a problem with a whole file (or directory, or other
// entry): its apps cannot be known, so it blocks pruning.
func (l *loader) fileProblem(name, msg string) {
	l.diags = append(l.diags, Diagnostic{File: name, Message: msg})
	l.unparsable = append(l.unparsable, name)
}

func (l *loader) file(ctx context.Context, name string, data []byte) error {
	if l.treeSpent != "" {
		l.fileProblem(name, fmt.Sprintf("not read: the spec tree is too large after expanding aliases and merge keys (the budget ran out in %s)", l.treeSpent))
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	first := len(l.docs)
	file := budget{left: MaxFileExpansion, what: "file", limit: MaxFileExpansion}
	// unusable marks the whole file: the documents before the problem did
	// parse, but applying half a file is a surprise nobody wants, so they
	// are held with the rest.
	unusable := func() {
		l.unparsable = append(l.unparsable, name)
		for _, d := range l.docs[first:] {
			d.valid = false
		}
	}
	for n := 0; ; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		var doc yaml.Node
		err := decodeDocument(dec, &doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			l.diags = append(l.diags, parseDiagnostic(name, data, err))
			unusable()
			return nil
		}
		if n == MaxDocuments {
			l.diags = append(l.diags, Diagnostic{File: name, Line: doc.Line, Col: doc.Column,
				Message: fmt.Sprintf("too many documents: a spec file may have at most %d", MaxDocuments)})
			unusable()
			return nil
		}
		l.document(ctx, name, &doc, &file)
		if file.spent() || l.tree.spent() {
			if l.tree.spent() {
				l.treeSpent = name
			}
			unusable()
			return nil
		}
	}
}

// decodeDocument guards against parser panics: whatever the bytes, a bad
// file must end up as a diagnostic, never take the reconciler down.
func decodeDocument(dec *yaml.Decoder, doc *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: the YAML parser failed: %v", r)
		}
	}()
	return dec.Decode(doc)
}

// yaml.v3 reports a syntax error as "yaml: line N: problem", where N comes
// from a 0-based mark: its scanner adds one and its parser does not, and
// when the mark is on the first line (0) it leaves "line N:" out. Its reader
// (bad UTF-8, control characters) and its alias resolution give no line at
// all. parseDiagnostic undoes that: the problems of the parser are known,
// so the line can be made 1-based for all, and the rest is found in the
// bytes. yaml.v3 never gives a column; the line's first (1) keeps the
// FILE:LINE:COL form editors and CI annotations parse.
var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// parserProblems are the problems yaml.v3's parser (parserc.go) reports;
// its line numbers are 0-based.
var parserProblems = map[string]bool{
	"did not find expected <stream-start>":   true,
	"did not find expected <document start>": true,
	"did not find expected node content":     true,
	"did not find expected key":              true,
	"did not find expected '-' indicator":    true,
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"found duplicate %YAML directive":        true,
	"found duplicate %TAG directive":         true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

// scannerProblems are those of yaml.v3's scanner (scannerc.go); its line
// numbers are 1-based.
var scannerProblems = []string{
	"block sequence entries are not allowed in this context",
	"could not find expected ':'",
	"could not find expected directive name",
	"did not find expected alphabetic or numeric character",
	"did not find expected comment or line break",
	"did not find expected digit or '.' character",
	"did not find expected hexdecimal number",
	"did not find expected version number",
	"did not find expected whitespace or line break",
	"did not find expected whitespace",
	"did not find the expected '>'",
	"exceeded max depth of ",
	"found a tab character that violates indentation",
	"found a tab character where an indentation space is expected",
	"found an indentation indicator equal to 0",
	"found character that cannot start any token",
	"found extremely long version number",
	"found invalid Unicode character escape code",
	"found unexpected document indicator",
	"found unexpected end of stream",
	"found unexpected non-alphabetical character",
	"found unknown directive name",
	"found unknown escape character",
	"mapping keys are not allowed in this context",
	"mapping values are not allowed in this context",
}

// readerProblems are those of yaml.v3's reader: bytes that are not UTF-8
// text YAML allows.
var readerProblems = map[string]bool{
	"control characters are not allowed": true,
	"invalid leading UTF-8 octet":        true,
	"invalid trailing UTF-8 octet":       true,
	"incomplete UTF-8 octet sequence":    true,
	"invalid length of a UTF-8 sequence": true,
	"invalid Unicode character":          true,
}

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '([0-9A-Za-z_-]+)' referenced$`)

// parseDiagnostic turns "yaml: line 3: did not find expected key" into a
// positioned diagnostic.
func parseDiagnostic(file string, data []byte, err error) Diagnostic {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, col := 0, 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
		if parserProblems[msg] {
			line++
		}
		col = 1
	} else if parserProblems[msg] || slices.ContainsFunc(scannerProblems, func(p string) bool { return strings.HasPrefix(msg, p) }) {
		line, col = 1, 1
	} else if readerProblems[msg] {
		if off := badTextOffset(data); off >= 0 {
			line, col = position(data, off)
		}
	} else if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
		re := regexp.MustCompile(`(?:^|[\s\[{,])(\*` + regexp.QuoteMeta(m[1]) + `)(?:$|[^0-9A-Za-z_-])`)
		if loc := re.FindSubmatchIndex(data); loc != nil {
			line, col = position(data, loc[2])
		}
	}
	// At the end of the input yaml.v3 points past the last line.
	if last := lineCount(data); line > last {
		line = last
	}
	return Diagnostic{File: file, Line: line, Col: col, Message: "invalid YAML: " + msg}
}

// badTextOffset is the offset of the first byte yaml.v3's reader refuses:
// invalid UTF-8 or a character YAML does not allow, or -1.
func badTextOffset(data []byte) int {
	if bytes.HasPrefix(data, []byte{0xfe, 0xff}) || bytes.HasPrefix(data, []byte{0xff, 0xfe}) {
		return -1 // UTF-16: positions are not worth the trouble
	}
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		ok := r == 0x09 || r == 0x0a || r == 0x0d || r >= 0x20 && r <= 0x7e || r == 0x85 ||
			r >= 0xa0 && r <= 0xd7ff || r >= 0xe000 && r <= 0xfffd || r >= 0x10000 && r <= 0x10ffff
		if !ok && !(i == 0 && r == 0xfeff) {
			return i
		}
		i += size
	}
	return -1
}

// position is the 1-based line and column (in characters) of offset off.
func position(data []byte, off int) (line, col int) {
	before := data[:off]
	line = 1 + bytes.Count(before, []byte("\n"))
	if i := bytes.LastIndexByte(before, '\n'); i >= 0 {
		before = before[i+1:]
	}
	return line, 1 + utf8.RuneCount(before)
}

// lineCount is the number of the last line of data that has a character.
func lineCount(data []byte) int {
	n := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return max(n, 1)
}

func (l *loader) document(ctx context.Context, file string, doc *yaml.Node, fileBudget *budget) {
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return // empty documents, e.g. a trailing "---"
	}
	if isSOPSDocument(doc.Content[0]) {
		// A SOPS-encrypted file (a secret the specs reference) is not an
		// App: it may sit beside them, as it does in Flux repositories.
		return
	}
	root := doc.Content[0]
	if countNodes(root, MaxDocumentNodes+1) > MaxDocumentNodes {
		// Not decoded at all: its name cannot be trusted, and the problems
		// of a part of it would only hide this one.
		l.diags = append(l.diags, Diagnostic{File: file, Line: root.Line, Col: root.Column,
			Message: fmt.Sprintf("document is too large: more than %d YAML nodes (keys, values and list items); an App has a few hundred", MaxDocumentNodes)})
		l.docs = append(l.docs, &loadedDoc{app: App{Origin: Origin{File: file, Line: root.Line}}})
		return
	}
	d := newDecoder(ctx, file, l.opts, fileBudget, &l.tree, l.provision)
	app, name := d.app(root)
	app.Origin = Origin{File: file, Line: root.Line}
	l.diags = append(l.diags, d.diags...)
	l.warnings = append(l.warnings, d.warnings...)
	l.docs = append(l.docs, &loadedDoc{app: app, name: name, valid: len(d.diags) == 0, deps: d.depNodes})
}

// countNodes counts the nodes written under root, without expanding
// aliases, stopping at limit.
func countNodes(root *yaml.Node, limit int) int {
	count := 0
	stack := []*yaml.Node{root}
	for len(stack) > 0 && count < limit {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		count++
		stack = append(stack, n.Content...)
	}
	return count
}

func (l *loader) result() *Result {
	// Which of two same-named apps is "first" is only an accident of file
	// order, so neither is applied: both are held until one is renamed.
	firstByName := map[string]*loadedDoc{}
	for _, d := range l.docs {
		if d.name == nil {
			continue
		}
		first, dup := firstByName[d.app.Metadata.Name]
		if !dup {
			firstByName[d.app.Metadata.Name] = d
			continue
		}
		l.diags = append(l.diags, Diagnostic{
			File: d.app.Origin.File, Line: d.name.Line, Col: d.name.Column,
			Path: "metadata.name",
			Message: fmt.Sprintf("duplicate app name %q (first defined at %s:%d)",
				d.app.Metadata.Name, first.app.Origin.File, first.name.Line),
		})
		first.valid, d.valid = false, false
	}
	l.checkDependencies(firstByName)

	r := &Result{Diagnostics: l.diags, Unparsable: l.unparsable, Warnings: l.warnings}
	for _, d := range l.docs {
		switch {
		case d.valid:
			r.Apps = append(r.Apps, d.app)
		case d.name != nil:
			r.InvalidApps = append(r.InvalidApps, d.app.Metadata.Name)
		default:
			r.Unidentified = append(r.Unidentified, d.app.Origin.File)
		}
	}
	slices.Sort(r.Unidentified)
	r.Unidentified = slices.Compact(r.Unidentified)
	slices.SortStableFunc(r.Apps, func(a, b App) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
	slices.Sort(r.InvalidApps)
	r.InvalidApps = slices.Compact(r.InvalidApps)
	slices.Sort(r.Unparsable)
	r.Unparsable = slices.Compact(r.Unparsable)
	r.Diagnostics.sort()
	r.Warnings.sort()
	return r
}
