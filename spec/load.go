package spec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Options tunes what the loader accepts. The zero value is the strict,
// safe default.
type Options struct {
	// AllowPrivileged allows security.privileged: "true" in system.config.
	// Privileged containers are root on the host, so this is opt-in.
	AllowPrivileged bool
	// RequireDigest makes a container image without @sha256:<digest> an
	// error, so that what runs is exactly what was reviewed in Git.
	RequireDigest bool
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
	// others), unreadable, or not a regular file (a symlink, a FIFO). The
	// reconciler must not prune anything in that run.
	Unparsable []string
	// Unidentified are the files holding an invalid document whose app
	// name could not be read (e.g. a misspelt metadata.name). That app is
	// neither applied nor held, so, as for Unparsable, nothing may be
	// pruned: its instances would look like those of a removed app.
	Unidentified []string
}

// OK reports whether the load found no problem at all.
func (r *Result) OK() bool { return len(r.Diagnostics) == 0 }

// Err returns the diagnostics as an error, or nil when there are none.
func (r *Result) Err() error {
	if r.OK() {
		return nil
	}
	return r.Diagnostics
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
// opened. Such entries, files over a limit (see MaxFileSize) and files that
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
		if de.IsDir() {
			return nil
		}
		return l.entry(ctx, fsys, name, de)
	})
	if err != nil {
		return nil, fmt.Errorf("spec: reading spec tree: %w", err)
	}
	return l.result(), nil
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
	data, err := readFile(ctx, fsys, name)
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

// readFile reads at most MaxFileSize bytes of a regular file, whatever its
// Stat said, checking ctx between chunks.
func readFile(ctx context.Context, fsys fs.FS, name string) ([]byte, error) {
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
	r := io.LimitReader(f, MaxFileSize+1)
	size := min(max(st.Size(), 0), MaxFileSize) + 1
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
		if len(data) > MaxFileSize {
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
	unparsable []string
	files      int   // spec files read or refused for size
	bytes      int64 // bytes of the files read
	tree       budget
	// treeSpent names the file where the tree's expansion budget ran out;
	// later files are not decoded.
	treeSpent string
}

func newLoader(opts Options) *loader {
	return &loader{opts: opts, tree: budget{left: MaxTreeExpansion, what: "spec tree", limit: MaxTreeExpansion}}
}

type loadedDoc struct {
	app   App
	name  *yaml.Node // nil if no usable name was read
	valid bool
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
		l.document(name, &doc, &file)
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

var yamlLineRE = regexp.MustCompile(`^line (\d+): `)

// parseDiagnostic turns "yaml: line 3: did not find expected key" into a
// positioned diagnostic; yaml.v3 gives no column for syntax errors.
func parseDiagnostic(file string, _ []byte, err error) Diagnostic {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line, col := 0, 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
		// yaml.v3 gives no column for syntax errors; column 1 keeps every
		// line in the FILE:LINE:COL form editors and CI annotations parse.
		col = 1
	}
	return Diagnostic{File: file, Line: line, Col: col, Message: "invalid YAML: " + msg}
}

func (l *loader) document(file string, doc *yaml.Node, fileBudget *budget) {
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return // empty documents, e.g. a trailing "---"
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
	d := newDecoder(file, l.opts, fileBudget, &l.tree)
	app, name := d.app(root)
	app.Origin = Origin{File: file, Line: root.Line}
	l.diags = append(l.diags, d.diags...)
	l.docs = append(l.docs, &loadedDoc{app: app, name: name, valid: len(d.diags) == 0})
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

	r := &Result{Diagnostics: l.diags, Unparsable: l.unparsable}
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
	return r
}
