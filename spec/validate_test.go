package spec

import (
	"slices"
	"strings"
	"testing"

	"github.com/distribution/reference"
)

func TestCheckValues(t *testing.T) {
	digest := "sha256:" + strings.Repeat("0a", 32)
	tests := []struct {
		what  string
		check func(string) string
		ok    []string
		bad   []string
	}{
		{"memory", checkMemory,
			[]string{"512MiB", "2GiB", "1GB", "100MB", "1024kB", "1073741824", "1B", "50%", "100%", "1PiB", "1125899906842624", "1125899906842624B"},
			[]string{"", "0", "0MiB", "512M", "512mib", "1.5GiB", "512 MiB", "0%", "101%", "-1GiB", "99999999999999999999999B", "1EiB", "2PB", "1125899906842625", "18446744073709551615EiB", "16EiB", "17179869184GiB"}},
		{"cpu", checkCPU,
			[]string{"1", "64", "0-3", "0,2", "0-3,8-11", "3-3", "4096", "0-4095"},
			[]string{"", "0", "-1", "3-1", "1.5", "0-", "a", "0,,1", "00000000000000000000000", "4097", "99999999999999999999",
				"0-4096", "0,99999999999999999999"}},
		{"env name", checkEnvName,
			[]string{"PORT", "_x", "a1", "LOG_LEVEL"},
			[]string{"", "1A", "A-B", "a.b", "A B"}},
		{"image", func(s string) string { return checkImageRef(s, false) },
			[]string{"nginx", "nginx:1.25", "library/nginx:1.25-alpine", "localhost/cron", "localhost:5000/cron",
				"127.0.0.1:5000/team/web:1.0", "registry.example/a/b/c", "nginx@" + digest, "nginx:v1@" + digest,
				"a__b/c-d.e_f", "ghcr.io/Org/app:1"[:0] + "ghcr.io/org/app:1",
				"[::1]:5000/foo:1", "[2001:db8::1]/team/app", "Registry.Example/x", "a--b/c", "nginx:" + strings.Repeat("a", 128)},
			[]string{"", "Nginx", "team/Web", "nginx:", "nginx:-x", "nginx@sha256:abc", "nginx@sha512:" + strings.Repeat("0", 128),
				"a//b", "/nginx", "nginx/", "-registry.example/x", "ex ample/x", "nginx@" + strings.ToUpper(digest),
				"nginx:" + strings.Repeat("a", 129), strings.Repeat("ab", 32), "[::1/foo", "nginx@sha256:" + strings.Repeat("0A", 32),
				strings.Repeat("a/", 130) + "a"}},
		{"duration", func(s string) string { _, msg := parseDuration(s, MinHealthcheckDuration, MaxDuration); return msg },
			[]string{"5s", "2m", "1h30m", "1.5s", "100ms", "1ms", "24h", "1440m"},
			[]string{"", "0", "0s", "-1s", "5", "soon", "999us", "24h0m1s", "9999999999h", "NaN", "Inf"}},
	}
	for _, tt := range tests {
		for _, s := range tt.ok {
			if msg := tt.check(s); msg != "" {
				t.Errorf("%s %q: unexpected %q", tt.what, s, msg)
			}
		}
		for _, s := range tt.bad {
			if tt.check(s) == "" {
				t.Errorf("%s %q: accepted", tt.what, s)
			}
		}
	}
}

func TestCheckNameLength(t *testing.T) {
	// 61 letters + "-9" is 63, LXD's limit; slot 10 no longer fits.
	name := strings.Repeat("a", 61)
	if msg := checkName(name, 9, false); msg != "" {
		t.Errorf("slot 9: %s", msg)
	}
	if msg := checkName(name, 10, false); msg == "" {
		t.Error("slot 10: accepted a 64-character instance name")
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct{ in, want string }{
		{"replica", "replicas"},
		{"Replicas", "replicas"},
		{"healtcheck", "healthcheck"},
		{"maxUnavailible", "maxUnavailable"},
		{"zzz", ""},
	}
	allowed := slices.Concat(appSpecFields.names(), containerFields.names(), updateFields.names())
	for _, tt := range tests {
		if got := suggest(tt.in, allowed); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// validate and the engine parse image references with the same library, so
// they agree on every reference (digests aside: berth asks for sha256).
func TestImageRefsAgreeWithEngine(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("0a", 32)
	for _, s := range []string{
		"nginx", "nginx:1.25", "[::1]:5000/foo:1", "[2001:db8::1]:443/a/b:c" + digest, "localhost/cron",
		"Registry.Example:5000/x", "a--b/c", "a..b/c", "a/b/c/d/e/f", "nginx:" + strings.Repeat("a", 128),
		"Nginx", "nginx:", "a//b", "[::1]/Foo", "[::1", "host:port/x", "x:1:2", strings.Repeat("ab", 32), "nginx:v1" + digest,
	} {
		_, err := reference.ParseNormalizedNamed(s)
		if got, want := checkImageRef(s, false) == "", err == nil; got != want {
			t.Errorf("%q: validate accepts %v, the engine's parser %v (%v)", s, got, want, err)
		}
	}
}
