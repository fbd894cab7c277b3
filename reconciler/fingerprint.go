package reconciler

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"strings"
)

// Fingerprint computes, for observed, the fingerprint this plan would
// record: apply compares it with p.ObservedFingerprint and refuses a plan
// computed against a world that has since moved.
//
// The fingerprint covers the instances the plan depends on: those owned
// by p.Owner, and those whose names the plan wants (Create targets and
// Conflicts), so a hand-made instance appearing on a name the plan is
// about to create makes the plan stale. It hashes a canonical JSON form
// (one object per instance, sorted by name; object keys sorted; no
// spaces) of what planning reads, leaving out what changes without
// changing any step: volatile.* keys, container health and restart
// counts, error texts and foreign containers.
func (p Plan) Fingerprint(observed Observed) string {
	insts := make([]*Instance, len(observed.Instances))
	for i := range observed.Instances {
		insts[i] = &observed.Instances[i]
	}
	slices.SortStableFunc(insts, func(a, b *Instance) int { return cmp.Compare(a.Name, b.Name) })
	return fingerprint(insts, p.Owner, p.wantedNames())
}

// Stale reports whether observed no longer matches the state the plan was
// computed from.
func (p Plan) Stale(observed Observed) bool {
	return p.Fingerprint(observed) != p.ObservedFingerprint
}

// wantedNames are the names the plan depends on that need not be owned.
func (p Plan) wantedNames() map[string]bool {
	names := make(map[string]bool, len(p.Conflicts))
	for _, s := range p.Steps {
		if s.Action == Create {
			names[s.Instance] = true
		}
	}
	for _, c := range p.Conflicts {
		names[c.Instance] = true
	}
	return names
}

// fingerprint hashes insts, which are sorted by name.
func fingerprint(insts []*Instance, owner string, wanted map[string]bool) string {
	h := sha256.New()
	var e canonEncoder
	for _, inst := range insts {
		if inst.Config[KeyOwner] != owner && !wanted[inst.Name] {
			continue
		}
		e.instance(inst)
		h.Write(e.buf)
		e.buf = e.buf[:0]
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// canonEncoder writes canonical JSON by hand: encoding/json through
// reflection made fingerprinting the larger part of planning a big fleet.
type canonEncoder struct {
	buf   []byte
	keys  []string
	pairs [][2]string
}

func (e *canonEncoder) instance(inst *Instance) {
	e.buf = append(e.buf, `{"name":`...)
	e.str(inst.Name)
	e.buf = append(e.buf, `,"status":`...)
	e.str(inst.Status)
	e.buf = append(e.buf, `,"config":`...)
	e.strMap(inst.Config, true)
	e.buf = append(e.buf, `,"profiles":[`...)
	for i, p := range inst.Profiles {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(p)
	}
	e.buf = append(e.buf, `],"devices":{`...)
	e.keys = e.keys[:0]
	for name := range inst.Devices {
		e.keys = append(e.keys, name)
	}
	slices.Sort(e.keys)
	for i, name := range e.keys {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(name)
		e.buf = append(e.buf, ':')
		e.strMap(inst.Devices[name], false)
	}
	e.buf = append(e.buf, `},"container":`...)
	if c := inst.Container; c == nil {
		e.buf = append(e.buf, "null"...)
	} else {
		e.buf = append(e.buf, `{"name":`...)
		e.str(c.Name)
		e.buf = append(e.buf, `,"id":`...)
		e.str(c.ID)
		e.buf = append(e.buf, `,"image":`...)
		e.str(c.Image)
		e.buf = append(e.buf, `,"state":`...)
		e.str(c.State)
		e.buf = append(e.buf, `,"labels":`...)
		e.strMap(c.Labels, false)
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, `,"dockerError":`...)
	e.buf = strconv.AppendBool(e.buf, inst.DockerError != "")
	e.buf = append(e.buf, "}\n"...)
}

// strMap writes m with sorted keys, leaving out volatile.* keys if asked.
// Pairs are collected while iterating, so no key is looked up twice.
func (e *canonEncoder) strMap(m map[string]string, skipVolatile bool) {
	e.pairs = e.pairs[:0]
	for k, v := range m {
		if !skipVolatile || !isVolatile(k) {
			e.pairs = append(e.pairs, [2]string{k, v})
		}
	}
	sortPairs(e.pairs)
	e.buf = append(e.buf, '{')
	for i, kv := range e.pairs {
		if i > 0 {
			e.buf = append(e.buf, ',')
		}
		e.str(kv[0])
		e.buf = append(e.buf, ':')
		e.str(kv[1])
	}
	e.buf = append(e.buf, '}')
}

// sortPairs sorts by key. Config maps are small: a plain insertion sort
// beats the generic sort's comparison calls by a wide margin here.
func sortPairs(p [][2]string) {
	if len(p) > 32 {
		slices.SortFunc(p, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
		return
	}
	for i := 1; i < len(p); i++ {
		for j := i; j > 0 && p[j][0] < p[j-1][0]; j-- {
			p[j], p[j-1] = p[j-1], p[j]
		}
	}
}

// needsEscape marks the bytes JSON strings must escape.
var needsEscape = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// str writes s as a JSON string: quotes, backslashes and control
// characters escaped, everything else as is.
func (e *canonEncoder) str(s string) {
	const hexDigits = "0123456789abcdef"
	e.buf = append(e.buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !needsEscape[c] {
			continue
		}
		e.buf = append(e.buf, s[start:i]...)
		switch c {
		case '"', '\\':
			e.buf = append(e.buf, '\\', c)
		case '\n':
			e.buf = append(e.buf, '\\', 'n')
		case '\t':
			e.buf = append(e.buf, '\\', 't')
		case '\r':
			e.buf = append(e.buf, '\\', 'r')
		default:
			e.buf = append(e.buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	e.buf = append(e.buf, s[start:]...)
	e.buf = append(e.buf, '"')
}
