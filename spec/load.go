package spec

import (
	"bytes"
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
	// Unparsable are the files (relative, slash-separated) that are not
	// YAML at all. Apps in them cannot be known, so the reconciler must not
	// prune anything in that run.
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
// the Result; the error is only for failing to read the tree.
func Load(fsys fs.FS, opts Options) (*Result, error) {
	l := &loader{opts: opts}
	err := fs.WalkDir(fsys, ".", func(name string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name != "." && strings.HasPrefix(de.Name(), ".") {
			if de.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if de.IsDir() || !isYAMLFile(name) {
			return nil
		}
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		l.file(name, data)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("spec: reading spec tree: %w", err)
	}
	return l.result(), nil
}

// LoadDir loads the spec tree rooted at dir. Diagnostics name files
// relative to dir.
func LoadDir(dir string, opts Options) (*Result, error) {
	return Load(os.DirFS(dir), opts)
}

// LoadBytes loads one file's contents as if it were the file name.
func LoadBytes(name string, data []byte, opts Options) (*Result, error) {
	l := &loader{opts: opts}
	l.file(name, data)
	return l.result(), nil
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
}

type loadedDoc struct {
	app   App
	name  *yaml.Node // nil if no usable name was read
	valid bool
}

func (l *loader) file(name string, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	first := len(l.docs)
	for {
		var doc yaml.Node
		err := decodeDocument(dec, &doc)
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			l.diags = append(l.diags, parseDiagnostic(name, err))
			l.unparsable = append(l.unparsable, name)
			// The documents before the error did parse, but applying half a
			// file is a surprise nobody wants: hold them with the rest.
			for _, d := range l.docs[first:] {
				d.valid = false
			}
			return
		}
		l.document(name, &doc)
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
func parseDiagnostic(file string, err error) Diagnostic {
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

func (l *loader) document(file string, doc *yaml.Node) {
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return // empty documents, e.g. a trailing "---"
	}
	root := doc.Content[0]
	d := newDecoder(file, l.opts)
	app, name := d.app(root)
	app.Origin = Origin{File: file, Line: root.Line}
	l.diags = append(l.diags, d.diags...)
	l.docs = append(l.docs, &loadedDoc{app: app, name: name, valid: len(d.diags) == 0})
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
	r.Diagnostics.sort()
	return r
}
