package source

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

var (
	// ErrRevisionAmbiguous is returned when a revision could name more
	// than one object (a short SHA shared by several, or a name that is
	// several refs): berth never picks one.
	ErrRevisionAmbiguous = errors.New("ambiguous revision")
	// ErrRevisionUnsupported is returned for revision syntax that berth
	// does not resolve (reflogs, paths, message searches, ranges) or that
	// names something other than a commit.
	ErrRevisionUnsupported = errors.New("unsupported revision")
)

// minHexPrefix is the shortest SHA prefix accepted, as in git.
const minHexPrefix = 4

// maxCommitSize bounds the objects loaded while resolving: a commit or a
// tag is small, and a short SHA that happens to name a huge blob must not
// be read into memory just to learn that it is not a commit.
const maxCommitSize = 16 << 20

// revStep is one ~N or ^N suffix of a revision.
type revStep struct {
	op byte // '~' or '^'
	n  int
}

// resolveCommit is berth's one revision resolver: `berth diff`, `plan`,
// `validate --rev` and `rollback` all go through it. It resolves what git
// resolves the same way, and refuses the rest with an error rather than
// resolving it to something else:
//
//   - a ref name, expanded as git does (NAME, refs/NAME, refs/tags/NAME,
//     refs/heads/NAME, refs/remotes/NAME, refs/remotes/NAME/HEAD); "@" is
//     HEAD. A name that is two refs pointing at different commits (a tag
//     and a branch "v1") is ambiguous and refused.
//   - a SHA, full or a prefix of at least 4 hex digits. A prefix shared by
//     several objects (of any type, as `git rev-parse` checks) or that is
//     also a ref naming another object is ambiguous and refused, with the
//     candidates listed.
//   - followed by any number of ~N, ^N (N-th parent, ^0 the commit
//     itself), ^{commit} and ^{}.
//
// Refused: reflog and upstream syntax (@{...}), REV:PATH and :/TEXT,
// ^{/TEXT}, ^{tree}/^{blob}/^{tag}/^{object}, ranges and ^! ^@ ^-. An
// annotated tag is peeled to its commit; a revision naming a tree or a
// blob is an error.
//
// fallbackRemote, when set, makes a name that matches nothing also be
// tried as fallbackRemote/NAME (a branch of a clone made from a URL lives
// under refs/remotes/origin).
func resolveCommit(repo *git.Repository, rev, fallbackRemote, where string) (*object.Commit, error) {
	if rev == "" {
		rev = "HEAD"
	}
	base, steps, err := parseRevision(rev)
	if err != nil {
		return nil, err
	}
	h, err := resolveBase(repo, rev, base, where)
	if errors.Is(err, ErrRevisionNotFound) && fallbackRemote != "" && !strings.HasPrefix(base, "refs/") && base != "HEAD" {
		if refs := lookupRefs(repo, fallbackRemote+"/"+base); len(refs) > 0 {
			h, err = pickRef(rev, refs)
		}
	}
	if err != nil {
		return nil, err
	}
	c, err := peelToCommit(repo, rev, h)
	if err != nil {
		return nil, err
	}
	for _, s := range steps {
		n := s.n
		if s.op == '~' {
			for i := 0; i < n; i++ {
				if c.NumParents() == 0 {
					return nil, fmt.Errorf("%w: %q in %s: goes past the first commit (%s has no parent)", ErrRevisionNotFound, rev, where, shortSHA(c.Hash.String()))
				}
				if c, err = parent(c, 0, rev); err != nil {
					return nil, err
				}
			}
			continue
		}
		if n == 0 {
			continue
		}
		if n > c.NumParents() {
			return nil, fmt.Errorf("%w: %q in %s: %s has %d parent(s), not a parent %d", ErrRevisionNotFound, rev, where, shortSHA(c.Hash.String()), c.NumParents(), n)
		}
		if c, err = parent(c, n-1, rev); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func parent(c *object.Commit, i int, rev string) (*object.Commit, error) {
	p, err := c.Parent(i)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: parent of %s is not in this repository (shallow history?): %v", ErrRevisionNotFound, rev, shortSHA(c.Hash.String()), err)
	}
	return p, nil
}

func unsupported(rev, why string) error {
	return fmt.Errorf("%w: %q: %s; name a commit by branch, tag or SHA (with ~N or ^N)", ErrRevisionUnsupported, rev, why)
}

// parseRevision splits rev into its base (a ref name or a SHA) and its
// ~N / ^N steps, refusing what resolveCommit does not resolve.
func parseRevision(rev string) (string, []revStep, error) {
	switch {
	case strings.Contains(rev, "@{"):
		return "", nil, unsupported(rev, "reflog and upstream syntax (@{...}) is not supported")
	case strings.Contains(rev, ":"):
		return "", nil, unsupported(rev, "REV:PATH and :/TEXT name a file or a search, not a commit")
	case strings.Contains(rev, ".."):
		return "", nil, unsupported(rev, "ranges (A..B, A...B) are not supported")
	case strings.HasPrefix(rev, "^"):
		return "", nil, unsupported(rev, "^REV (exclusion) is not supported")
	}
	for _, r := range rev {
		if r <= ' ' || r == 0x7f {
			return "", nil, fmt.Errorf("%w: %q: a revision has no spaces or control characters", ErrRevisionNotFound, rev)
		}
	}
	i := strings.IndexAny(rev, "~^")
	if i < 0 {
		i = len(rev)
	}
	base, rest := rev[:i], rev[i:]
	if base == "@" {
		base = "HEAD"
	}
	if base == "" {
		return "", nil, unsupported(rev, "no branch, tag or SHA before ~ or ^")
	}
	if base != "HEAD" && plumbing.ReferenceName("refs/x/"+base).Validate() != nil {
		return "", nil, fmt.Errorf("%w: %q is not a valid branch, tag or SHA", ErrRevisionNotFound, rev)
	}
	var steps []revStep
	for len(rest) > 0 {
		op := rest[0]
		rest = rest[1:]
		if op == '^' && strings.HasPrefix(rest, "{") {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return "", nil, fmt.Errorf("%w: %q: ^{ without }", ErrRevisionNotFound, rev)
			}
			switch inner := rest[1:end]; {
			case inner == "" || inner == "commit":
				// Peel to the commit: every revision is peeled anyway.
			case strings.HasPrefix(inner, "/"):
				return "", nil, unsupported(rev, "^{/TEXT} (a search in commit messages) is not supported")
			case inner == "tree" || inner == "blob":
				return "", nil, unsupported(rev, "^{"+inner+"} names a "+inner+", and berth needs a commit")
			case inner == "tag" || inner == "object":
				return "", nil, unsupported(rev, "^{"+inner+"} is not supported (use ^{commit})")
			default:
				return "", nil, fmt.Errorf("%w: %q: unknown ^{%s}", ErrRevisionNotFound, rev, inner)
			}
			rest = rest[end+1:]
			continue
		}
		if op == '^' && rest != "" && strings.ContainsRune("!@-", rune(rest[0])) {
			return "", nil, unsupported(rev, "^! ^@ and ^- stand for ranges, which are not supported")
		}
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		n := 1
		if j > 0 {
			v, err := strconv.Atoi(rest[:j])
			if err != nil || v > 1<<30 {
				return "", nil, fmt.Errorf("%w: %q: %s%s is out of range", ErrRevisionNotFound, rev, string(op), rest[:j])
			}
			n = v
		}
		rest = rest[j:]
		if rest != "" && rest[0] != '~' && rest[0] != '^' {
			return "", nil, fmt.Errorf("%w: %q: unexpected %q after %c", ErrRevisionNotFound, rev, rest, op)
		}
		steps = append(steps, revStep{op: op, n: n})
	}
	return base, steps, nil
}

// namedRef is a ref a name expands to.
type namedRef struct {
	name plumbing.ReferenceName
	hash plumbing.Hash
}

// lookupRefs expands a name with git's rules and returns every ref it
// names. The first rule (the name itself, under .git) is kept to names
// like HEAD and ORIG_HEAD, and to full names (refs/heads/x), as git
// keeps it to its root refs.
func lookupRefs(repo *git.Repository, name string) []namedRef {
	var out []namedRef
	for i, rule := range plumbing.RefRevParseRules {
		if i == 0 && !isRootRef(name) && !strings.HasPrefix(name, "refs/") {
			continue
		}
		rn := plumbing.ReferenceName(fmt.Sprintf(rule, name))
		if rn.Validate() != nil && rn != plumbing.HEAD && !isRootRef(string(rn)) {
			continue
		}
		ref, err := storer.ResolveReference(repo.Storer, rn)
		if err != nil || ref == nil {
			continue // not this one (or unreadable: as git, try the next)
		}
		if ref.Type() != plumbing.HashReference || ref.Hash().IsZero() {
			continue
		}
		out = append(out, namedRef{name: rn, hash: ref.Hash()})
	}
	return out
}

// isRootRef tells the names git looks up directly in the git dir: HEAD,
// ORIG_HEAD, FETCH_HEAD and the like (upper case and underscores,
// ending in HEAD).
func isRootRef(name string) bool {
	if !strings.HasSuffix(name, "HEAD") {
		return false
	}
	for _, r := range name {
		if (r < 'A' || r > 'Z') && r != '_' {
			return false
		}
	}
	return true
}

func pickRef(rev string, refs []namedRef) (plumbing.Hash, error) {
	h := refs[0].hash
	for _, r := range refs[1:] {
		if r.hash != h {
			names := make([]string, len(refs))
			for i, r := range refs {
				names[i] = fmt.Sprintf("%q (%s)", r.name, shortSHA(r.hash.String()))
			}
			return plumbing.ZeroHash, fmt.Errorf("%w: %q names several refs: %s; give the full ref name", ErrRevisionAmbiguous, rev, strings.Join(names, ", "))
		}
	}
	return h, nil
}

// resolveBase resolves the part of a revision before its steps to an
// object (a commit or a tag, usually).
func resolveBase(repo *git.Repository, rev, base, where string) (plumbing.Hash, error) {
	refs := lookupRefs(repo, base)
	isHex := isHexString(base)
	if isHex && len(base) == 2*len(plumbing.ZeroHash) {
		// A full SHA is the object, whatever refs are called (as in git).
		h := plumbing.NewHash(strings.ToLower(base))
		if repo.Storer.HasEncodedObject(h) == nil {
			return h, nil
		}
		if len(refs) == 0 {
			return plumbing.ZeroHash, fmt.Errorf("%w: %q in %s: no such object", ErrRevisionNotFound, rev, where)
		}
		return pickRef(rev, refs)
	}
	var (
		cands []plumbing.Hash
		err   error
	)
	if isHex && len(base) >= minHexPrefix {
		if cands, err = hashesWithPrefix(repo.Storer, strings.ToLower(base)); err != nil {
			return plumbing.ZeroHash, fmt.Errorf("%q in %s: look up SHA prefix: %w", rev, where, err)
		}
	}
	if len(refs) > 0 {
		h, err := pickRef(rev, refs)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		if len(cands) == 0 || len(cands) == 1 && cands[0] == h {
			return h, nil
		}
		return plumbing.ZeroHash, fmt.Errorf("%w: %q is both the ref %q (%s) and a short SHA of %s; give the full ref name or more hex digits",
			ErrRevisionAmbiguous, rev, refs[0].name, shortSHA(h.String()), describeCandidates(repo, cands))
	}
	switch {
	case len(cands) == 1:
		return cands[0], nil
	case len(cands) > 1:
		return plumbing.ZeroHash, fmt.Errorf("%w: %q is a prefix of %d objects: %s; give more hex digits",
			ErrRevisionAmbiguous, rev, len(cands), describeCandidates(repo, cands))
	case isHex && len(base) < minHexPrefix:
		return plumbing.ZeroHash, fmt.Errorf("%w: %q in %s: no such branch or tag, and a SHA prefix needs at least %d hex digits",
			ErrRevisionNotFound, rev, where, minHexPrefix)
	}
	return plumbing.ZeroHash, fmt.Errorf("%w: %q in %s", ErrRevisionNotFound, rev, where)
}

func isHexString(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F') {
			return false
		}
	}
	return true
}

// hashesWithPrefix lists every object (of any type) whose SHA starts
// with the lower-case hex prefix.
func hashesWithPrefix(st storer.EncodedObjectStorer, prefix string) ([]plumbing.Hash, error) {
	even, err := hex.DecodeString(prefix[:len(prefix)&^1])
	if err != nil {
		return nil, err
	}
	var all []plumbing.Hash
	type fast interface {
		HashesWithPrefix(prefix []byte) ([]plumbing.Hash, error)
	}
	if f, ok := st.(fast); ok {
		if all, err = f.HashesWithPrefix(even); err != nil {
			return nil, err
		}
	} else {
		iter, err := st.IterEncodedObjects(plumbing.AnyObject)
		if err != nil {
			return nil, err
		}
		err = iter.ForEach(func(o plumbing.EncodedObject) error {
			if h := o.Hash(); bytes.HasPrefix(h[:], even) {
				all = append(all, h)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	seen := map[plumbing.Hash]bool{}
	var out []plumbing.Hash
	for _, h := range all {
		if !seen[h] && strings.HasPrefix(h.String(), prefix) {
			seen[h] = true
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out, nil
}

// describeCandidates names each object: its type, SHA and, for a commit,
// its date and subject, as git's hint lists them.
func describeCandidates(repo *git.Repository, hs []plumbing.Hash) string {
	const show = 10
	var parts []string
	for i, h := range hs {
		if i == show {
			parts = append(parts, fmt.Sprintf("and %d more", len(hs)-show))
			break
		}
		parts = append(parts, describeObject(repo, h))
	}
	return strings.Join(parts, ", ")
}

func describeObject(repo *git.Repository, h plumbing.Hash) string {
	sha := shortSHA(h.String())
	if size, err := objectSize(repo.Storer, h); err == nil && size > maxCommitSize {
		return "blob " + sha
	}
	o, err := repo.Storer.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return "object " + sha
	}
	switch o.Type() {
	case plumbing.CommitObject:
		if c, err := object.DecodeCommit(repo.Storer, o); err == nil {
			subject, _, _ := strings.Cut(c.Message, "\n")
			return fmt.Sprintf("commit %s %s %q", sha, c.Author.When.UTC().Format("2006-01-02"), subject)
		}
	case plumbing.TagObject:
		if t, err := object.DecodeTag(repo.Storer, o); err == nil {
			return fmt.Sprintf("tag %s %q", sha, t.Name)
		}
	}
	return o.Type().String() + " " + sha
}

// objectSize reads an object's size from its header, without its content.
func objectSize(st storer.EncodedObjectStorer, h plumbing.Hash) (int64, error) {
	type sizer interface {
		EncodedObjectSize(plumbing.Hash) (int64, error)
	}
	if s, ok := st.(sizer); ok {
		return s.EncodedObjectSize(h)
	}
	o, err := st.EncodedObject(plumbing.AnyObject, h)
	if err != nil {
		return 0, err
	}
	return o.Size(), nil
}

// peelToCommit follows annotated tags to the commit they name.
func peelToCommit(repo *git.Repository, rev string, h plumbing.Hash) (*object.Commit, error) {
	for range 16 {
		if size, err := objectSize(repo.Storer, h); err == nil && size > maxCommitSize {
			return nil, fmt.Errorf("%w: %q names a large object (%s), not a commit", ErrRevisionUnsupported, rev, shortSHA(h.String()))
		}
		o, err := repo.Storer.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: object %s: %v", ErrRevisionNotFound, rev, shortSHA(h.String()), err)
		}
		switch o.Type() {
		case plumbing.CommitObject:
			return object.DecodeCommit(repo.Storer, o)
		case plumbing.TagObject:
			t, err := object.DecodeTag(repo.Storer, o)
			if err != nil {
				return nil, fmt.Errorf("%q: tag %s: %w", rev, shortSHA(h.String()), err)
			}
			h = t.Target
		default:
			return nil, fmt.Errorf("%w: %q names a %s (%s), not a commit", ErrRevisionUnsupported, rev, o.Type(), shortSHA(h.String()))
		}
	}
	return nil, fmt.Errorf("%w: %q: tags nested too deep", ErrRevisionUnsupported, rev)
}
