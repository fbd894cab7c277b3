package spec

import (
	"errors"
	"fmt"
	"math/bits"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/distribution/reference"
)

// The checks here are pure functions of one value returning a message ("" if
// fine), so the decoder stays about structure and the rules can be tested
// and compared with the JSON Schema's patterns on their own.

// maxInstanceName is LXD's limit on instance names (a hostname label).
const maxInstanceName = 63

var (
	nameRE = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)

	// LXD's byte sizes: a count with an optional SI or IEC suffix (LXD
	// spells kilo "kB"), or a share of the host's memory.
	memoryRE  = regexp.MustCompile(`^([0-9]+)(B|kB|MB|GB|TB|PB|EB|KiB|MiB|GiB|TiB|PiB|EiB)?$`)
	percentRE = regexp.MustCompile(`^([0-9]+)%$`)

	cpuCountRE = regexp.MustCompile(`^[0-9]+$`)
	cpuSetRE   = regexp.MustCompile(`^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$`)

	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

	sha256HexRE = regexp.MustCompile(`^[a-f0-9]{64}$`)

	// portNameRE is an IANA service name (RFC 6335 section 5.1) in
	// lowercase: groups of letters and digits joined by single '-', one
	// group holding a letter. Its length is checked apart.
	portNameRE = regexp.MustCompile(`^([a-z0-9]+-)*[a-z0-9]*[a-z][a-z0-9]*(-[a-z0-9]+)*$`)
)

// maxPortName is RFC 6335's limit on a service name.
const maxPortName = 15

// checkPortName checks spec.container.ports[].name, which becomes the
// _<name> label of an SRV record.
func checkPortName(s string) string {
	if len(s) > maxPortName || !portNameRE.MatchString(s) {
		return fmt.Sprintf("%q is not a valid port name: use at most %d lowercase letters, digits and '-', at least one letter, no '-' at either end and no \"--\" (an IANA service name, as SRV records need)", s, maxPortName)
	}
	return ""
}

// isZeroDuration reports whether s is a zero duration written without a
// sign: "0", "0s", "0ms", ...
func isZeroDuration(s string) bool {
	if s != "0" && !durationRE.MatchString(s) {
		return false
	}
	v, err := time.ParseDuration(s)
	return err == nil && v == 0
}

// checkName checks metadata.name. highestSlot is the largest slot number
// the app will use (AppSpec.HighestSlot), since LXD must accept
// "<name>-<slot>" as a hostname; standIn says that slot is a stand-in's,
// so the message can say where a number larger than the replicas comes
// from.
func checkName(name string, highestSlot int, standIn bool) string {
	if !nameRE.MatchString(name) {
		return fmt.Sprintf("%q is not a valid app name: use lowercase letters, digits and '-', start with a letter and end with a letter or digit", name)
	}
	inst := name + "-" + strconv.Itoa(highestSlot)
	if len(inst) > maxInstanceName {
		msg := fmt.Sprintf("name is too long: instance name %q has %d characters, LXD allows %d", inst, len(inst), maxInstanceName)
		if standIn {
			msg += fmt.Sprintf(" (with placement.replaceUnreachable, a stand-in for a lost replica takes a slot after the replicas, up to %d)", highestSlot)
		}
		return msg
	}
	return ""
}

// checkSystemImage checks system.image: "[remote:]name", as the live
// side splits it at the first ':'. Either part empty, or a second ':',
// would reach LXD as an empty remote or alias, or an alias with a ':' that
// no LXD alias has, and fail only when an instance is created.
func checkSystemImage(s string) string {
	if s == "" || strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		return fmt.Sprintf("must be an LXD image alias or fingerprint (or remote:alias) without spaces, got %q", s)
	}
	remote, alias, hasRemote := strings.Cut(s, ":")
	switch {
	case !hasRemote:
	case strings.Contains(alias, ":"):
		return fmt.Sprintf("%q has more than one ':': write remote:alias, with one ':' between the --image-remote name and the alias", s)
	case remote == "":
		return fmt.Sprintf("%q has no remote name before ':': write remote:alias (an --image-remote name), or the alias alone for an image on the LXD server", s)
	case alias == "":
		return fmt.Sprintf("%q has no image alias after ':': write remote:alias, like images:debian/12", s)
	}
	return ""
}

// checkUser checks container.user: "uid", "uid:gid", "name" or
// "name:group", the form Docker takes; a part left empty ("root:",
// ":1000") is refused as the schema's pattern refuses it.
func checkUser(s string) string {
	user, group, hasGroup := strings.Cut(s, ":")
	if user == "" || (hasGroup && (group == "" || strings.Contains(group, ":"))) || strings.IndexFunc(s, unicode.IsSpace) >= 0 {
		return fmt.Sprintf(`user must be "uid", "uid:gid", "name" or "name:group", with no part empty and no spaces, got %q`, s)
	}
	return ""
}

// memoryUnits are the byte multipliers of LXD's size suffixes.
var memoryUnits = map[string]uint64{
	"": 1, "B": 1,
	"kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "PB": 1e15, "EB": 1e18,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50, "EiB": 1 << 60,
}

func checkMemory(s string) string {
	const want = `must be a size like "512MiB", "2GiB", "1GB" or "1024kB", a byte count, or a percentage like "50%"`
	if m := percentRE.FindStringSubmatch(s); m != nil {
		if p, err := strconv.Atoi(m[1]); err != nil || p < 1 || p > 100 {
			return fmt.Sprintf("memory percentage %q must be between 1%% and 100%%", s)
		}
		return ""
	}
	n, ok := sizeBytes(s)
	switch {
	case !ok && !memoryRE.MatchString(s):
		return fmt.Sprintf("%s, got %q", want, s)
	case !ok || n > MaxMemory:
		return fmt.Sprintf("memory size %q is too large: at most 1PiB", s)
	case n == 0:
		return "memory limit must be more than 0"
	}
	return ""
}

// sizeBytes reads a size in limits.memory's units ("512MiB", "1GB", a
// byte count) as bytes; ok is false for one that does not parse or does
// not fit in 64 bits.
func sizeBytes(s string) (n uint64, ok bool) {
	m := memoryRE.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	count, err := strconv.ParseUint(m[1], 10, 64)
	hi, b := bits.Mul64(count, memoryUnits[m[2]])
	if err != nil || hi != 0 {
		return 0, false
	}
	return b, true
}

func checkCPU(s string) string {
	if cpuCountRE.MatchString(s) {
		// LXD reads a lone number as a count, not as CPU number s.
		if n, err := strconv.Atoi(s); err != nil || n < 1 || n > MaxCPUs {
			return fmt.Sprintf("CPU count must be between 1 and %d, got %q", MaxCPUs, s)
		}
		return ""
	}
	if !cpuSetRE.MatchString(s) {
		return fmt.Sprintf(`must be a number of CPUs like "2" or a CPU set like "0-3" or "0,2", got %q`, s)
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		for _, cpu := range []string{lo, hi} {
			if n, err := strconv.Atoi(cpu); cpu != "" && (err != nil || n >= MaxCPUs) {
				return fmt.Sprintf("CPU number %s in %q is out of range: CPU numbers go from 0 to %d", cpu, s, MaxCPUs-1)
			}
		}
		if !isRange {
			continue
		}
		a, _ := strconv.Atoi(lo)
		b, _ := strconv.Atoi(hi)
		if a > b {
			return fmt.Sprintf("CPU range %q must go from low to high", part)
		}
	}
	return ""
}

func checkEnvName(s string) string {
	if !envNameRE.MatchString(s) {
		return fmt.Sprintf("%q is not a valid environment variable name: use letters, digits and '_', not starting with a digit", s)
	}
	return ""
}

// durationRE is the syntax of a Go duration without its sign.
var durationRE = regexp.MustCompile(`^(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// parseDuration reads a Go duration between lo and hi. It must be positive
// whatever lo is: a zero interval or timeout is a typo, never a wish.
func parseDuration(s string, lo, hi time.Duration) (Duration, string) {
	if rest, plus := strings.CutPrefix(s, "+"); plus {
		// Go takes "+5s"; the schema's pattern, and so editors, do not.
		return 0, fmt.Sprintf("duration %q has a '+' sign; write it without one, like %q", s, rest)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if durationRE.MatchString(strings.TrimLeft(s, "+-")) {
			return 0, fmt.Sprintf("duration %q is out of range: at most %s", s, ShortDuration(hi))
		}
		return 0, fmt.Sprintf(`%q is not a duration; write it like "5s", "2m" or "1h30m"`, s)
	}
	switch {
	case v <= 0:
		return 0, fmt.Sprintf("duration must be more than 0, got %q", s)
	case v < lo:
		return 0, fmt.Sprintf("duration %q is too short: at least %s", s, ShortDuration(lo))
	case v > hi:
		return 0, fmt.Sprintf("duration %q is too long: at most %s", s, ShortDuration(hi))
	}
	return Duration(v), ""
}

// ShortDuration writes a duration as people write it: 24h rather than
// 24h0m0s, 2m rather than 2m0s. Messages about durations use it.
func ShortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// checkImageRef checks a Docker image reference
// [registry[:port]/]repo[:tag][@sha256:<64 hex>] with the parser the engine
// pulls with (distribution/reference, as Docker does), so that validate
// accepts exactly what the engine can run. berth's own rule on top: a digest
// is sha256, which is what registries serve.
func checkImageRef(ref string, requireDigest bool) string {
	if ref == "" {
		return "image must not be empty"
	}
	if _, digest, hasDigest := strings.Cut(ref, "@"); hasDigest {
		algo, hex, _ := strings.Cut(digest, ":")
		if algo != "sha256" || !sha256HexRE.MatchString(hex) {
			return fmt.Sprintf("image digest %q must be sha256:<64 lowercase hex digits>", digest)
		}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	switch {
	case err != nil && strings.Contains(err.Error(), "must be lowercase"):
		return fmt.Sprintf("image repository must be lowercase, got %q", ref)
	case errors.Is(err, reference.ErrNameTooLong):
		return fmt.Sprintf("image name is longer than %d characters", reference.RepositoryNameTotalLengthMax)
	case err != nil:
		return fmt.Sprintf("%q is not a valid image reference: want [registry[:port]/]repo[:tag][@sha256:<digest>]", ref)
	}
	if _, pinned := named.(reference.Digested); requireDigest && !pinned {
		return "image is not pinned to a digest: add @sha256:<digest> (berth runs with --require-digest)"
	}
	return ""
}

// isTrue mirrors how LXD reads boolean config values, so that
// security.privileged: "yes" is caught as well as "true".
func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

// allowPrivileged ends every message about an isolation-breaking key or
// device: they are refused unless Options.AllowPrivileged.
const allowPrivileged = "; not allowed (berth --allow-privileged permits it)"

// isolationBreakingKey says why an LXD config key and value break the
// isolation of an unprivileged container, or "" if they do not. They are
// refused unless Options.AllowPrivileged. What is refused is exactly what
// README.md's "Isolation is enforced" lists.
func isolationBreakingKey(key, value string) string {
	const (
		interceptMount = "security.syscalls.intercept.mount"
		interceptBPF   = "security.syscalls.intercept.bpf"
	)
	switch {
	case key == "security.privileged" && isTrue(value):
		return "privileged system containers are not allowed (berth --allow-privileged permits them)"
	case key == "raw.lxc":
		return "raw.lxc passes raw LXC settings past LXD's checks and can undo the container's isolation" + allowPrivileged
	case key == "raw.idmap":
		return "raw.idmap maps host users and groups into the container, so its root may own host files" + allowPrivileged
	case strings.HasPrefix(key, "raw."):
		// raw.apparmor, raw.seccomp, raw.qemu, ... and any raw key a later
		// LXD adds: each hands text to a layer under LXD unchecked.
		return key + " passes raw settings past LXD's checks (to LXC, AppArmor, seccomp or QEMU) and can undo the container's isolation" + allowPrivileged
	case key == "security.idmap.isolated" && isFalse(value):
		return `security.idmap.isolated: "false" shares the uid/gid map with other containers instead of giving this one its own` + allowPrivileged
	case key == "linux.kernel_modules":
		return "linux.kernel_modules loads modules into the host's kernel when the instance starts" + allowPrivileged
	case key == interceptMount+".allowed" && value != "":
		return fmt.Sprintf("%s: %q has the host's kernel mount those file systems for the container, from devices and images the container controls", key, value) + allowPrivileged
	case strings.HasPrefix(key, interceptMount) && isTrue(value):
		return fmt.Sprintf("%s: %q has LXD mount file systems for the container as root on the host", key, value) + allowPrivileged
	case strings.HasPrefix(key, interceptBPF) && isTrue(value):
		return fmt.Sprintf("%s: %q has LXD load BPF programs for the container as root on the host", key, value) + allowPrivileged
	}
	return ""
}

// hostDeviceTypes are the LXD device types that pass a host device (its
// device node, GPU, USB or PCI device, InfiniBand port) into the instance.
var hostDeviceTypes = map[string]bool{
	"unix-char": true, "unix-block": true, "unix-hotplug": true,
	"gpu": true, "usb": true, "pci": true, "infiniband": true,
}

// hostNICTypes are the nictype values that move a host network device (a
// physical NIC or an SR-IOV virtual function) into the instance.
var hostNICTypes = map[string]bool{"physical": true, "sriov": true}

// hostSystemPaths are the host folders a disk device may not share: the
// host's own configuration, state, kernel interfaces and LXD's data. A
// disk of one of them, of anything under one, or of a folder above one
// (/var holds /var/lib/lxd) is refused; so is "/". /var/run is listed as
// well as /run because it is the usual alias of it.
var hostSystemPaths = []string{
	"/var/lib/lxd", "/var/snap/lxd", "/proc", "/sys", "/dev", "/run", "/var/run", "/etc", "/root", "/boot",
}

// deviceProblem is a device key that breaks the instance's isolation and
// why.
type deviceProblem struct {
	key, msg string
}

// isolationBreakingDevice says which keys of an LXD device break the
// isolation of an unprivileged container, and why; nil if none do. Keys
// depend on the device's type, which may be written after them, so this
// looks at the whole device. What is refused is exactly what README.md's
// "Isolation is enforced" lists.
func isolationBreakingDevice(dev map[string]string) []deviceProblem {
	var out []deviceProblem
	add := func(key, format string, args ...any) {
		out = append(out, deviceProblem{key, fmt.Sprintf(format, args...) + allowPrivileged})
	}
	typ := dev["type"]
	if hostDeviceTypes[typ] {
		add("type", "device type %q passes a host device into the instance, which breaks its isolation", typ)
	}
	switch typ {
	case "nic":
		if nt := dev["nictype"]; hostNICTypes[nt] {
			add("nictype", "nictype %q hands a host network device to the instance, which breaks its isolation", nt)
		}
	case "proxy":
		// A TCP or UDP proxy (a registry on the host's loopback, say)
		// stays allowed; a socket file may be LXD's own, which is root
		// on the host.
		if c := dev["connect"]; strings.HasPrefix(strings.ToLower(strings.TrimSpace(c)), "unix:") {
			add("connect", "a proxy that connects to a unix socket (%q) can reach sockets like LXD's own, which give root on the host", c)
		}
	case "disk":
		if s := dev["shift"]; isTrue(s) {
			add("shift", "shift: %q maps the container's root to the host's on this disk, so the files it writes there are owned by root on the host", s)
		}
		if src := dev["source"]; path.IsAbs(src) {
			if dir := hostSystemPath(src); dir != "" {
				add("source", "source %q shares the host's %s with the instance, which breaks its isolation", src, dir)
			} else if dir := hostSystemChild(src); dir != "" {
				add("source", "source %q holds the host's %q, which it shares with the instance and so breaks its isolation", src, dir)
			}
		}
	}
	return out
}

// hostSystemPath returns the host system folder (or "/") that the absolute
// path p is or is under, or "" if none. p is cleaned first, so "/etc/../"
// is "/" and "//proc" is "/proc".
func hostSystemPath(p string) string {
	p = path.Clean(p)
	if p == "/" {
		return `root file system "/"`
	}
	for _, dir := range hostSystemPaths {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			return fmt.Sprintf("%q", dir)
		}
	}
	return ""
}

// hostSystemChild returns the first host system folder under the absolute
// path p (cleaned first, so "/srv/../var" is "/var"), or "" if none: a
// disk of /var/lib exposes /var/lib/lxd as surely as one of /var/lib/lxd.
func hostSystemChild(p string) string {
	p = path.Clean(p)
	for _, dir := range hostSystemPaths {
		if strings.HasPrefix(dir, p+"/") {
			return dir
		}
	}
	return ""
}

// isFalse mirrors how LXD reads a false boolean config value.
func isFalse(s string) bool {
	switch strings.ToLower(s) {
	case "false", "0", "no", "off":
		return true
	}
	return false
}
