package spec

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The decoder walks yaml.Node trees by hand instead of using yaml.Unmarshal:
// Unmarshal stops at the first type error and knows neither columns nor
// field paths, while berth must report every problem of the tree at once.

// maxMergeDepth bounds chains of merge keys; real specs use one or two.
const maxMergeDepth = 16

// segment is one step of the field path.
type segment struct {
	name    string
	index   int
	isIndex bool
	// key is where the segment was written, so a missing child field can
	// point at its parent's key rather than at the parent's first child.
	key *yaml.Node
}

// budget is what is left of one expansion budget (see MaxDocumentExpansion).
type budget struct {
	left, limit int
	what        string // "document", "file", "spec tree"
	// aliased is set once an alias or merge key was expanded against the
	// budget, so running out says what the cause was.
	aliased bool
}

func (b *budget) spent() bool { return b.left < 0 }

type decoder struct {
	// ctx is the load's: reading provision files honours it.
	ctx      context.Context
	file     string
	opts     Options
	path     []segment
	diags    Diagnostics
	warnings Diagnostics
	// budgets are the document's, the file's and the tree's; every node
	// visited is taken from all three.
	budgets []*budget
	// overBudget is set when one ran out; no other problem is reported
	// after that, as a part-read document would show false ones (like a
	// required field "missing" after the point where reading stopped).
	overBudget bool
	// merging holds the mappings whose merge keys are being expanded, to
	// catch a merge that includes its own mapping.
	merging []*yaml.Node
	// reported drops repeats: an anchor used in many places, or merged
	// many times, has one problem, not one per use.
	reported map[Diagnostic]bool

	// nameNode is metadata.name once read as a string.
	nameNode *yaml.Node
	// depNodes are the spec.dependsOn[].app values read, by index, for
	// the checks across apps the loader makes once every app is read.
	depNodes []*yaml.Node
	// mounts are the targets of spec.container.volumes read so far, by
	// clean path, with the index of the volume; volume is the index of
	// the one being read.
	mounts map[string]int
	volume int
	// secretTargets are where container.secretFiles[].target were
	// written, checked against the volumes once the app is read.
	secretTargets []*place

	// hasContainer is set when spec.container is written; systemPorts and
	// restartContainer are where spec.system.ports and a true
	// provision.restartContainer were written. Whether they are allowed
	// depends on spec.container, which may come before or after them.
	hasContainer     bool
	systemPorts      *place
	restartContainer *place
	// snapshot is where a true update.snapshot was written, refused with
	// system.ephemeral, which may come before or after it.
	snapshot *place
	// volumesAt is where a non-empty spec.system.volumes was written, for
	// the checks that need the whole app (checkVolumes).
	volumesAt *place
	// repo reads provision files for the whole load; provisionPaths are the destinations of the provision
	// being read, by path, with the index of the file.
	repo           *provisionReader
	provisionPaths map[string]int
}

// place is a node with the field path it was read at, to report a problem
// found after the rest of the document was read.
type place struct {
	node *yaml.Node
	path []segment
}

// mark remembers n at the current path; nil when n is nil.
func (d *decoder) mark(n *yaml.Node) *place {
	if n == nil {
		return nil
	}
	return &place{node: n, path: slices.Clone(d.path)}
}

// errorAt records a problem at a place marked earlier.
func (d *decoder) errorAt(p *place, format string, args ...any) {
	saved := d.path
	d.path = p.path
	d.errorf(p.node, format, args...)
	d.path = saved
}

func newDecoder(ctx context.Context, file string, opts Options, fileBudget, treeBudget *budget, prov *provisionReader) *decoder {
	doc := &budget{left: MaxDocumentExpansion, limit: MaxDocumentExpansion, what: "document"}
	bs := []*budget{doc}
	for _, b := range []*budget{fileBudget, treeBudget} {
		if b != nil {
			bs = append(bs, b)
		}
	}
	return &decoder{ctx: ctx, file: file, opts: opts, budgets: bs, repo: prov}
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func (d *decoder) pathString() string {
	p := ""
	for _, s := range d.path {
		if s.isIndex {
			p += fmt.Sprintf("[%d]", s.index)
		} else {
			p = AppendPathKey(p, s.name)
		}
	}
	return p
}

func (d *decoder) push(name string, key *yaml.Node) {
	d.path = append(d.path, segment{name: name, key: key})
}
func (d *decoder) pushIndex(i int, item *yaml.Node) {
	d.path = append(d.path, segment{index: i, isIndex: true, key: item})
}
func (d *decoder) pop() { d.path = d.path[:len(d.path)-1] }

// errorf records a problem at n for the current path.
func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	if d.overBudget {
		return
	}
	diag := Diagnostic{
		File:    d.file,
		Line:    n.Line,
		Col:     n.Column,
		Path:    d.pathString(),
		Message: fmt.Sprintf(format, args...),
	}
	if d.reported[diag] {
		return
	}
	if d.reported == nil {
		d.reported = map[Diagnostic]bool{}
	}
	d.reported[diag] = true
	d.diags = append(d.diags, diag)
}

// warnf records, once, a warning at n for the current path: a problem that
// leaves the spec valid.
func (d *decoder) warnf(n *yaml.Node, format string, args ...any) {
	w := Diagnostic{File: d.file, Line: n.Line, Col: n.Column, Path: d.pathString(), Message: fmt.Sprintf(format, args...)}
	if !slices.Contains(d.warnings, w) {
		d.warnings = append(d.warnings, w)
	}
}

// spend takes n from the budgets and reports, once, when one runs out.
func (d *decoder) spend(n int, at *yaml.Node) bool {
	if d.overBudget {
		return false
	}
	for _, b := range d.budgets {
		b.left -= n
	}
	for _, b := range d.budgets {
		if !b.spent() {
			continue
		}
		d.overBudget = true
		cause := ""
		if b.aliased {
			cause = " after expanding aliases and merge keys"
		}
		// No field path: the problem is the whole document's, file's or
		// tree's, not that of the field where reading stopped.
		d.diags = append(d.diags, Diagnostic{File: d.file, Line: at.Line, Col: at.Column,
			Message: fmt.Sprintf("%s is too large%s: over %d nodes to read", b.what, cause, b.limit)})
		return false
	}
	return true
}

// expanding notes that an alias or merge key is being expanded.
func (d *decoder) expanding() {
	for _, b := range d.budgets {
		b.aliased = true
	}
}

// resolve follows aliases. It returns nil when the budget is spent.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		d.expanding()
		if !d.spend(1, n) {
			return nil
		}
		n = n.Alias
	}
	if !d.spend(1, n) {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!!str":
			return "string " + strconv.Quote(n.Value)
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			return "number " + n.Value
		case "!!bool":
			return "boolean " + n.Value
		case "!!null":
			return "null"
		default:
			return fmt.Sprintf("value %q tagged %s", n.Value, tag)
		}
	}
	return "an unsupported YAML node"
}

func (d *decoder) typeError(n *yaml.Node, want string) {
	d.errorf(n, "expected %s, got %s", want, describe(n))
}

// str reads a string. Numbers and booleans are refused rather than turned
// into text, because YAML has already changed them (1.10 -> 1.1, on ->
// true in YAML 1.1 tools) and the user should say what they mean.
func (d *decoder) str(n *yaml.Node, why string) (string, bool) {
	if n = d.resolve(n); n == nil {
		return "", false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" {
		// Through aliases one long string can be read many times.
		if !d.spend(len(n.Value)/64, n) {
			return "", false
		}
		if len(n.Value) > MaxStringLen {
			d.errorf(n, "is %d bytes long; a string may have at most %d (256 KiB)", len(n.Value), MaxStringLen)
			return "", false
		}
		if msg := checkNUL(n.Value); msg != "" {
			d.errorf(n, "%s", msg)
			return "", false
		}
		return n.Value, true
	}
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int", "!!float", "!!bool":
			msg := fmt.Sprintf("expected a string, got %s; quote it: %q", describe(n), n.Value)
			if why != "" {
				msg += " (" + why + ")"
			}
			d.errorf(n, "%s", msg)
			return "", false
		}
	}
	d.typeError(n, "a string")
	return "", false
}

// checkNUL refuses a string with a NUL byte. Every string of a spec ends
// up in a C string somewhere (an LXD config value, an environment
// variable, an argument of execve, a path), which would cut it there or
// fail only when a replica is created; a YAML "\0" escape is the only way
// to write one.
func checkNUL(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Sprintf("contains a NUL byte (\\0, at byte %d), which no LXD value, environment variable, command argument or path can hold; remove it", i)
	}
	return ""
}

// intLiteralRE matches what is written as an integer. yaml.v3 tags one
// too large for 64 bits as a float (or, when very long, as a string).
var intLiteralRE = regexp.MustCompile(`^[-+]?([0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+|0b[01_]+)$`)

// leadingZeroRE matches a plain decimal integer written with a leading
// zero, like 0443 or 010.
var leadingZeroRE = regexp.MustCompile(`^[-+]?0[0-9_]*[0-9]$`)

// leadingZero says why a plain number with a leading zero is refused, or
// "" if n is not one. YAML 1.1, and yaml.v3 with it, reads 0443 as octal
// (291) and 0080 as the float 80, while YAML 1.2 editors show 443 and 80:
// whichever berth took, someone reading the file would see another number.
func leadingZero(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode || n.Style&^yaml.TaggedStyle != 0 || !leadingZeroRE.MatchString(n.Value) {
		return ""
	}
	digits := strings.ReplaceAll(strings.TrimLeft(n.Value, "+-"), "_", "")
	decimal := strings.TrimLeft(digits, "0")
	if decimal == "" {
		decimal = "0"
	} else if strings.HasPrefix(n.Value, "-") {
		decimal = "-" + decimal
	}
	octal := ""
	if v, err := strconv.ParseInt(digits, 8, 64); err == nil {
		if strings.HasPrefix(n.Value, "-") {
			v = -v
		}
		octal = fmt.Sprintf(" (%d)", v)
	}
	return fmt.Sprintf("%s has a leading zero, which YAML 1.1 reads as octal%s and YAML 1.2 editors show as decimal (%s); write %s",
		n.Value, octal, decimal, decimal)
}

// integer reads an integer between lo and hi.
func (d *decoder) integer(n *yaml.Node, lo, hi int) (int, bool) {
	if n = d.resolve(n); n == nil {
		return 0, false
	}
	outOfRange := func() (int, bool) {
		d.errorf(n, "must be between %d and %d, got %s", lo, hi, n.Value)
		return 0, false
	}
	if n.Kind != yaml.ScalarNode {
		d.typeError(n, "an integer")
		return 0, false
	}
	if msg := leadingZero(n); msg != "" {
		d.errorf(n, "%s", msg)
		return 0, false
	}
	switch n.ShortTag() {
	case "!!int":
	case "!!float", "!!str":
		if n.Style == 0 && intLiteralRE.MatchString(n.Value) {
			return outOfRange()
		}
		d.typeError(n, "an integer")
		return 0, false
	default:
		d.typeError(n, "an integer")
		return 0, false
	}
	var v int64
	if err := n.Decode(&v); err != nil || v < int64(lo) || v > int64(hi) {
		return outOfRange()
	}
	return int(v), true
}

func (d *decoder) boolean(n *yaml.Node) (bool, bool) {
	if n = d.resolve(n); n == nil {
		return false, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.typeError(n, "a boolean (true or false)")
		return false, false
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		d.typeError(n, "a boolean (true or false)")
		return false, false
	}
	return v, true
}

// list returns the items of a sequence, aliases not yet resolved.
func (d *decoder) list(n *yaml.Node) ([]*yaml.Node, bool) {
	if n = d.resolve(n); n == nil {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		d.typeError(n, "a list")
		return nil, false
	}
	if len(n.Content) > MaxItems {
		d.errorf(n, "has %d items; a list may have at most %d", len(n.Content), MaxItems)
		return nil, false
	}
	return n.Content, true
}

// stringList reads a list of strings. An explicit empty list gives a
// non-nil empty slice so callers can tell it from an absent field.
func (d *decoder) stringList(n *yaml.Node) ([]string, bool) {
	items, ok := d.list(n)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		d.pushIndex(i, item)
		s, ok2 := d.str(item, "")
		d.pop()
		ok = ok && ok2
		out = append(out, s)
	}
	return out, ok
}

// entry is one key/value pair of a mapping after merge keys are applied.
type entry struct {
	key  string
	k, v *yaml.Node
}

// mapping returns the entries of a mapping in source order, reporting
// duplicate and non-scalar keys. Merge keys (<<: *anchor) are expanded with
// YAML's rule: keys written in the mapping win over merged ones.
func (d *decoder) mapping(n *yaml.Node) ([]entry, bool) {
	entries, ok := d.mappingDepth(n, 0)
	if len(entries) > MaxItems {
		d.errorf(d.resolve(n), "has %d entries; a mapping may have at most %d", len(entries), MaxItems)
		return nil, false
	}
	return entries, ok
}

func (d *decoder) mappingDepth(n *yaml.Node, depth int) ([]entry, bool) {
	if n = d.resolve(n); n == nil {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		d.typeError(n, "a mapping")
		return nil, false
	}
	if !d.spend(len(n.Content)/2, n) {
		return nil, false
	}
	ok := true
	var own, merged []entry
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			d.expanding()
			d.merging = append(d.merging, n)
			m, ok2 := d.merge(v, depth)
			d.merging = d.merging[:len(d.merging)-1]
			ok = ok && ok2
			merged = append(merged, m...)
			continue
		}
		rk := d.resolve(k)
		if rk == nil {
			return nil, false
		}
		if rk.Kind != yaml.ScalarNode || isNull(rk) {
			d.errorf(k, "mapping keys must be strings, got %s", describe(rk))
			ok = false
			continue
		}
		if len(rk.Value) > MaxStringLen {
			d.errorf(k, "key is %d bytes long; at most %d are allowed", len(rk.Value), MaxStringLen)
			ok = false
			continue
		}
		if msg := checkNUL(rk.Value); msg != "" {
			d.push(rk.Value, k)
			d.errorf(k, "key %s", msg)
			d.pop()
			ok = false
			continue
		}
		if first, dup := seen[rk.Value]; dup {
			d.push(rk.Value, k)
			d.errorf(k, "duplicate key %q (first at line %d)", rk.Value, first.Line)
			d.pop()
			ok = false
			continue
		}
		seen[rk.Value] = k
		own = append(own, entry{key: rk.Value, k: k, v: v})
	}
	for _, e := range merged {
		if _, dup := seen[e.key]; dup {
			continue
		}
		seen[e.key] = e.k
		own = append(own, e)
	}
	return own, ok
}

// merge expands the value of a merge key: a mapping or a list of mappings,
// earlier ones winning.
func (d *decoder) merge(v *yaml.Node, depth int) ([]entry, bool) {
	if depth >= maxMergeDepth {
		d.errorf(v, "merge keys nested too deeply")
		return nil, false
	}
	rv := d.resolve(v)
	if rv == nil {
		return nil, false
	}
	// Keep the alias itself as the source so problems point at the use.
	sources := []*yaml.Node{v}
	if rv.Kind == yaml.SequenceNode {
		sources = rv.Content
	}
	ok := true
	var out []entry
	seen := map[string]bool{}
	for _, src := range sources {
		if r := d.resolve(src); r == nil {
			return out, false
		} else if slices.Contains(d.merging, r) {
			d.errorf(src, "merge key includes the mapping it is in")
			ok = false
			continue
		}
		es, ok2 := d.mappingDepth(src, depth+1)
		ok = ok && ok2
		for _, e := range es {
			if !seen[e.key] {
				seen[e.key] = true
				out = append(out, e)
			}
		}
	}
	return out, ok
}

// field is one key of an object: its name, whether it is required, and how
// its value is decoded into the Go value of type T. The fields of each type
// are in app.go.
type field[T any] struct {
	name     string
	required bool
	// min and max bound an integer field (isInt); schema.json must say
	// the same.
	isInt    bool
	min, max int
	// enum lists the only values a string field may have.
	enum []string
	// decode reads a non-null value into dst, with the field's path
	// pushed.
	decode func(d *decoder, v *yaml.Node, dst *T)
}

// fields are the keys an object of type T accepts, in documentation order.
type fields[T any] []field[T]

func (fs fields[T]) names() []string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return names
}

// required marks a field as one the object must have.
func required[T any](f field[T]) field[T] {
	f.required = true
	return f
}

// intField is an integer field between lo and hi.
func intField[T any](name string, lo, hi int, dst func(*T) *int) field[T] {
	return field[T]{name: name, isInt: true, min: lo, max: hi, decode: func(d *decoder, v *yaml.Node, t *T) {
		if i, ok := d.integer(v, lo, hi); ok {
			*dst(t) = i
		}
	}}
}

// intOrPercentField is a field that takes a number from lo to hi or a
// percentage from 1% to 100% ("25%"). The bounds are those of the number:
// JSON Schema applies minimum and maximum to numbers only, and a pattern
// to strings only.
func intOrPercentField[T any](name string, lo, hi int, dst func(*T) *IntOrPercent) field[T] {
	return field[T]{name: name, isInt: true, min: lo, max: hi, decode: func(d *decoder, v *yaml.Node, t *T) {
		n := d.resolve(v)
		if n == nil {
			return
		}
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" || intLiteralRE.MatchString(n.Value) && n.Style == 0 {
			// Numbers keep the integer's checks and messages.
			if i, ok := d.integer(n, lo, hi); ok {
				*dst(t) = IntOrPercent{N: i}
			}
			return
		}
		p, msg := parsePercent(n.Value)
		if msg != "" {
			d.errorf(n, "%s", msg)
			return
		}
		*dst(t) = IntOrPercent{Percent: p}
	}}
}

// parsePercent reads "25%": 1% to 100%, digits only, no leading zero, no
// space. msg says what is wrong otherwise.
func parsePercent(s string) (int, string) {
	const want = "must be a number of replicas or a percentage of them from 1%% to 100%% (like \"25%%\"), got %q"
	if !percentRE.MatchString(s) {
		return 0, fmt.Sprintf(want, s)
	}
	digits := strings.TrimSuffix(s, "%")
	if len(digits) > 1 && digits[0] == '0' {
		return 0, fmt.Sprintf("%s has a leading zero; write %s%%", s, strings.TrimLeft(digits, "0"))
	}
	p, err := strconv.Atoi(digits)
	if err != nil || p < 1 || p > 100 {
		return 0, fmt.Sprintf("a percentage must be between 1%% and 100%%, got %s", s)
	}
	return p, ""
}

// enumField is a string field with a fixed set of values.
func enumField[T any](name string, values []string, dst func(*T) *string) field[T] {
	return field[T]{name: name, enum: values, decode: func(d *decoder, v *yaml.Node, t *T) {
		if s, ok := d.str(v, ""); ok {
			*dst(t) = s
			if !slices.Contains(values, s) {
				quoted := make([]string, len(values))
				for i, e := range values {
					quoted[i] = strconv.Quote(e)
				}
				d.errorf(v, "must be %s, got %q", strings.Join(quoted, " or "), s)
			}
		}
	}}
}

// object decodes a mapping into dst with the fields fs, each with its path
// pushed. Unknown fields are reported; null values count as absent, as in
// Kubernetes manifests; then missing required fields are reported. It
// returns false when n is not a mapping at all.
func object[T any](d *decoder, n *yaml.Node, fs fields[T], dst *T) bool {
	entries, ok := d.mapping(n)
	if entries == nil && !ok {
		return false
	}
	present := map[string]bool{}
	for _, e := range entries {
		d.push(e.key, e.k)
		i := slices.IndexFunc(fs, func(f field[T]) bool { return f.name == e.key })
		switch {
		case i < 0:
			d.errorf(e.k, "%s", unknownField(e.key, fs.names()))
		default:
			if v := d.resolve(e.v); v != nil && !isNull(v) {
				present[e.key] = true
				fs[i].decode(d, e.v, dst)
			}
		}
		d.pop()
	}
	var req []string
	for _, f := range fs {
		if f.required {
			req = append(req, f.name)
		}
	}
	d.require(n, present, req...)
	return true
}

// require reports the named fields missing from present. The position is
// the key of the enclosing field when there is one, since that is what the
// user has to extend.
func (d *decoder) require(n *yaml.Node, present map[string]bool, names ...string) {
	at := n
	if len(d.path) > 0 && d.path[len(d.path)-1].key != nil {
		at = d.path[len(d.path)-1].key
	}
	if d.overBudget {
		return
	}
	for _, name := range names {
		if !present[name] {
			d.push(name, nil)
			d.errorf(at, "required field is missing")
			d.pop()
		}
	}
}

func unknownField(name string, allowed []string) string {
	msg := fmt.Sprintf("unknown field %q", name)
	if s := suggest(name, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	return msg + "; allowed: " + strings.Join(allowed, ", ")
}

// suggest returns the allowed name closest to a misspelt one, if any is
// close enough to be a likely typo.
func suggest(name string, allowed []string) string {
	best, bestDist := "", 3
	for _, a := range allowed {
		if strings.EqualFold(a, name) {
			return a
		}
		if dist := editDistance(strings.ToLower(name), strings.ToLower(a)); dist < bestDist {
			best, bestDist = a, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30 // not a typo; keep the quadratic cost small
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
