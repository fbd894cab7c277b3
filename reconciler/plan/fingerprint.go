package plan

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"github.com/berth-gitops/berth/ownership"
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
// about to create makes the plan stale. It hashes what planning reads:
// status, profiles, devices, the config keys berth manages (its
// user.berth.* keys but the revision, and the keys its
// user.berth.config-keys lists), whether Docker answered, and the app
// container's name, id, image, state and hash label. Everything else can
// change without changing any step (volatile.* and image.* keys, keys
// berth never set, revisions, health, restart counts, error texts, foreign
// containers), so it does not make a plan stale.
//
// The form hashed is canonical JSON: one object per instance, in name
// order, each on a line of its own; fields in a fixed order; the keys of
// config and devices sorted by their bytes; no spaces; strings as
// canonEncoder.str writes them (RFC 8259's required escapes only, as RFC
// 8785 does: not encoding/json's form).
func (p Plan) Fingerprint(observed Observed) string {
	insts := make([]*Instance, len(observed.Instances))
	for i := range observed.Instances {
		insts[i] = &observed.Instances[i]
	}
	slices.SortStableFunc(insts, func(a, b *Instance) int { return cmp.Compare(a.Name, b.Name) })
	return fingerprint(insts, p.Owner, p.wantedNames(), observed.Members, observed.Images)
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
func fingerprint(insts []*Instance, owner string, wanted map[string]bool, members []Member, images []Image) string {
	h := sha256.New()
	var e canonEncoder
	for i := 0; i < len(insts); {
		inst := insts[i]
		j := i + 1
		for j < len(insts) && insts[j].Name == inst.Name {
			j++
		}
		if j-i > 1 {
			// Instances sharing a name (a broken observer) are ordered by
			// their encoding, so input order never leaks into the hash.
			var encs []string
			for _, dup := range insts[i:j] {
				e.instance(dup)
				encs = append(encs, string(e.buf))
				e.buf = e.buf[:0]
			}
			slices.Sort(encs)
			for _, enc := range encs {
				h.Write([]byte(enc))
			}
		} else if inst.Config[ownership.KeyOwner] == owner || wanted[inst.Name] {
			e.instance(inst)
			h.Write(e.buf)
			e.buf = e.buf[:0]
		}
		i = j
	}
	e.world(members, images)
	h.Write(e.buf)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// canonEncoder writes canonical JSON by hand: encoding/json through
// reflection made fingerprinting the larger part of planning a big fleet.
// Its strings are not encoding/json's: see str.
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
	e.managedConfig(inst.Config)
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
		e.strMap(inst.Devices[name])
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
		e.buf = append(e.buf, `,"hash":`...)
		e.str(c.Labels[ownership.LabelContainerHash])
		e.buf = append(e.buf, '}')
	}
	e.buf = append(e.buf, `,"dockerError":`...)
	e.buf = strconv.AppendBool(e.buf, inst.DockerError != "")
	if inst.DockerUnknown != "" {
		e.buf = append(e.buf, `,"dockerUnknown":true`...)
	}
	// Written only when set, so that fingerprints of what has none stay
	// as they were before placement and base images were planned.
	if inst.Location != "" {
		e.buf = append(e.buf, `,"location":`...)
		e.str(inst.Location)
	}
	if inst.BaseImage != "" {
		e.buf = append(e.buf, `,"baseImage":`...)
		e.str(inst.BaseImage)
	}
	e.buf = append(e.buf, "}\n"...)
}

// world writes what planning reads besides the instances: the members'
// statuses and where the image aliases point.
func (e *canonEncoder) world(members []Member, images []Image) {
	for _, m := range members {
		e.buf = append(e.buf, `{"member":`...)
		e.str(m.Name)
		e.buf = append(e.buf, `,"status":`...)
		e.str(m.Status)
		e.buf = append(e.buf, "}\n"...)
	}
	for _, img := range images {
		if len(img.Aliases) == 0 {
			continue
		}
		e.buf = append(e.buf, `{"image":`...)
		e.str(img.Fingerprint)
		e.buf = append(e.buf, `,"aliases":[`...)
		for i, a := range img.Aliases {
			if i > 0 {
				e.buf = append(e.buf, ',')
			}
			e.str(a)
		}
		e.buf = append(e.buf, "]}\n"...)
	}
}

// fingerprintKeys are berth's keys that planning reads.
var fingerprintKeys = []string{ownership.KeyApp, ownership.KeyConfigKeys, ownership.KeyImage, ownership.KeyOwner,
	ownership.KeyProvisionHash, ownership.KeyProvisionedAt, ownership.KeySlot, ownership.KeySystemHash, ownership.KeySystemOnly}

// managedConfig writes the config keys planning reads: berth's own and
// those its config-keys list names. Looking them up beats walking and
// sorting whole configs, which LXD fills with image.* and volatile.* keys.
func (e *canonEncoder) managedConfig(cfg map[string]string) {
	e.pairs = e.pairs[:0]
	// The list is sorted and its keys mostly sort before user.berth.*, so
	// appending in this order leaves the insertion sort little to do.
	for rest := cfg[ownership.KeyConfigKeys]; rest != ""; {
		var k string
		k, rest, _ = strings.Cut(rest, ",")
		if k == "" || strings.HasPrefix(k, ownership.KeyPrefix) || isVolatile(k) {
			continue
		}
		if v := cfg[k]; v != "" {
			e.pairs = append(e.pairs, [2]string{k, v})
		}
	}
	for _, k := range fingerprintKeys {
		if v := cfg[k]; v != "" {
			e.pairs = append(e.pairs, [2]string{k, v})
		}
	}
	sortPairs(e.pairs)
	// A hand-edited list may repeat a key.
	e.pairs = slices.Compact(e.pairs)
	e.writePairs()
}

// strMap writes m with sorted keys.
func (e *canonEncoder) strMap(m map[string]string) {
	e.pairs = e.pairs[:0]
	for k, v := range m {
		e.pairs = append(e.pairs, [2]string{k, v})
	}
	sortPairs(e.pairs)
	e.writePairs()
}

func (e *canonEncoder) writePairs() {
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

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// hasZero is non-zero when a byte of x is zero; hasLess when a byte of x
// is below n (n <= 128). Bytes >= 0x80 (UTF-8) are never flagged.
func hasZero(x uint64) uint64         { return (x - ones) &^ x & highs }
func hasLess(x uint64, n byte) uint64 { return (x - ones*uint64(n)) &^ x & highs }

// needsEscape marks the bytes JSON strings must escape.
var needsEscape = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// str writes s as a JSON string with only the escapes RFC 8259 requires:
// quote and backslash as \" and \\, the control characters U+0000 to
// U+001F as \b \f \n \r \t or else \u00xx (lower-case hex). Every other
// byte is written as it is: <, > and &, DEL, U+2028 and U+2029, and
// invalid UTF-8 too. For valid UTF-8 this is how RFC 8785 (JCS)
// serialises strings, and any JSON decoder reads s back; it differs from
// encoding/json, which also escapes <, >, &, U+2028 and U+2029 and
// replaces invalid UTF-8 with U+FFFD. FuzzCanonString holds str to a
// byte-at-a-time reference and to that round trip. Changing the form
// changes every fingerprint.
func (e *canonEncoder) str(s string) {
	const hexDigits = "0123456789abcdef"
	e.buf = append(e.buf, '"')
	start := 0
	// Most strings need no escaping: check eight bytes at a time.
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		if hasLess(x, 0x20)|hasZero(x^(ones*'"'))|hasZero(x^(ones*'\\')) != 0 {
			break
		}
	}
	for ; i < len(s); i++ {
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
		case '\b':
			e.buf = append(e.buf, '\\', 'b')
		case '\f':
			e.buf = append(e.buf, '\\', 'f')
		default:
			e.buf = append(e.buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	e.buf = append(e.buf, s[start:]...)
	e.buf = append(e.buf, '"')
}
