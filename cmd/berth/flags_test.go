package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/berth-gitops/berth/spec"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// allFlags lists every flag of every berth command: the command path (as
// arguments) and the flag.
func allFlags(root *cobra.Command) (out []struct {
	path []string
	flag *pflag.Flag
}) {
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			out = append(out, struct {
				path []string
				flag *pflag.Flag
			}{path, f})
		})
		for _, sub := range c.Commands() {
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(root, nil)
	return out
}

// No flag takes a number through pflag's unchecked types: each goes
// through a bounded type, so NaN, Inf and out-of-range values cannot slip
// past a range check (issue 9 #1: --max-prune NaN switched the mass-prune
// guard off).
func TestEveryNumericFlagIsBounded(t *testing.T) {
	unchecked := map[string]bool{
		"float32": true, "float64": true, "duration": true, "int": true, "int8": true, "int16": true,
		"int32": true, "int64": true, "uint": true, "uint8": true, "uint16": true, "uint32": true, "uint64": true,
		"count": true, "float32Slice": true, "float64Slice": true, "durationSlice": true, "intSlice": true,
		"int32Slice": true, "int64Slice": true, "uintSlice": true,
	}
	n := 0
	for _, f := range allFlags(newRootCmd()) {
		switch f.flag.Value.(type) {
		case *fractionFlag, *durationFlag:
			n++
			continue
		}
		if unchecked[f.flag.Value.Type()] {
			t.Errorf("berth %s --%s is a plain %s flag: use a bounded flag type", strings.Join(f.path, " "), f.flag.Name, f.flag.Value.Type())
		}
	}
	if n < 7 { // --max-prune on plan, apply, status, run; --interval, --lease-ttl, --drain
		t.Errorf("found %d bounded numeric flags, want at least 7", n)
	}
}

// Every bounded flag of every command refuses NaN, infinities, negative,
// below-minimum and huge values through the real command line, and
// accepts its own default.
func TestNumericFlagsRefuseNaNInfAndOutOfRange(t *testing.T) {
	for _, f := range allFlags(newRootCmd()) {
		var bad []string
		switch v := f.flag.Value.(type) {
		case *fractionFlag:
			bad = []string{"NaN", "nan", "Inf", "+Inf", "-Inf", "infinity", "-1", "1e309", "-1e309", "9223372036854775807", "", "0x", "half",
				fmt.Sprint(v.min), fmt.Sprint(v.max + 1e-9)}
		case *durationFlag:
			bad = []string{"NaN", "Inf", "-1s", "-1ns", "1000000h", "9223372036854775807ns", "99999999999999999999s", "", "30", "soon",
				(v.max + time.Nanosecond).String()}
			if v.min > 0 {
				bad = append(bad, "0", (v.min - time.Nanosecond).String())
			}
		default:
			continue
		}
		for _, v := range bad {
			args := append(append([]string{}, f.path...), "--"+f.flag.Name+"="+v)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errOut := berth(t, args...)
				if code != exitError || !strings.Contains(errOut, "--"+f.flag.Name) || !strings.Contains(errOut, "want") {
					t.Fatalf("code %d, want 1 and an error naming the flag and the range\nstdout: %s\nstderr: %s", code, out, errOut)
				}
			})
		}
		// The default is in range.
		if err := f.flag.Value.Set(f.flag.DefValue); err != nil {
			t.Errorf("--%s default %q: %v", f.flag.Name, f.flag.DefValue, err)
		}
	}
}

func TestBoundedFlagTypes(t *testing.T) {
	var share float64
	ff := newFractionFlag(&share, 0.5, 0, 1)
	for _, ok := range []string{"1", "0.25", " 0.5 ", "1e-3"} {
		if err := ff.Set(ok); err != nil {
			t.Errorf("fraction %q: %v", ok, err)
		}
	}
	if err := ff.Set("NaN"); err == nil || share != 1e-3 {
		t.Errorf("NaN accepted, or changed the value to %v", share)
	}
	var d time.Duration
	df := newDurationFlag(&d, 2*time.Minute, time.Second, 24*time.Hour)
	if df.String() != "2m" {
		t.Errorf("default shows as %q", df.String())
	}
	if err := df.Set("25h"); err == nil || err.Error() != "25h is out of range; want a duration between 1s and 24h" || d != 2*time.Minute {
		t.Errorf("25h: %v, value %v", err, d)
	}
	for in, want := range map[time.Duration]string{0: "0s", 90 * time.Second: "1m30s", time.Hour: "1h", 90 * time.Minute: "1h30m", time.Hour + time.Second: "1h0m1s"} {
		if got := spec.ShortDuration(in); got != want {
			t.Errorf("spec.ShortDuration(%v) = %q, want %q", in, got, want)
		}
	}
}

// Every global flag reads $BERTH_<FLAG>; the command line wins, an empty
// variable counts as unset, and a bad value is an error naming the variable.
func TestGlobalFlagsReadTheEnvironment(t *testing.T) {
	values := map[string]string{
		"owner": "team-a", "log-level": "debug", "log-format": "json", "lxd": "/tmp/lxd.sock",
		"lxd-cert": "/c.pem", "lxd-key": "/k.pem", "lxd-server-cert": "/s.pem", "project": "p1",
		"target": "node2", "registry-auth": "/auth.json", "pull": "always",
		"image-remote": "a=https://a.example, b=https://b.example",
		"age-key-file": "/keys/old.txt,/keys/new.txt",
	}
	want := map[string]string{"image-remote": "[a=https://a.example,b=https://b.example]", "age-key-file": "[/keys/old.txt,/keys/new.txt]"}
	root := newRootCmd()
	flags := envFlags(root)
	for _, f := range flags {
		if _, ok := values[f.Name]; !ok {
			t.Errorf("global flag --%s has no value in this test", f.Name)
		}
		if !strings.Contains(f.Usage, "$"+envName(f.Name)) {
			t.Errorf("--%s help does not name $%s: %q", f.Name, envName(f.Name), f.Usage)
		}
	}
	if len(flags) != len(values) {
		t.Errorf("%d global flags, test knows %d", len(flags), len(values))
	}
	// A command that prints every global flag's value.
	show := func(args ...string) (int, string, string) {
		root := newRootCmd()
		root.AddCommand(&cobra.Command{Use: "show", RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range envFlags(cmd.Root()) {
				fmt.Fprintf(cmd.OutOrStdout(), "%s=%s\n", f.Name, f.Value)
			}
			return nil
		}})
		var out, errb bytes.Buffer
		code := execute(context.Background(), root, append([]string{"show"}, args...), &out, &errb)
		return code, out.String(), errb.String()
	}
	for name, v := range values {
		t.Setenv(envName(name), v)
	}
	code, out, errOut := show()
	if code != 0 {
		t.Fatalf("code %d: %s", code, errOut)
	}
	for name, v := range values {
		if w, ok := want[name]; ok {
			v = w
		}
		if !strings.Contains(out, "\n"+name+"="+v+"\n") && !strings.HasPrefix(out, name+"="+v+"\n") {
			t.Errorf("--%s from $%s: want %q in\n%s", name, envName(name), v, out)
		}
	}
	// The command line wins.
	if _, out, _ := show("--owner", "team-b", "--pull", "if-not-present"); !strings.Contains(out, "owner=team-b\n") || !strings.Contains(out, "pull=if-not-present\n") {
		t.Errorf("flags did not win over the environment:\n%s", out)
	}
	// Empty is unset.
	t.Setenv("BERTH_OWNER", "")
	if _, out, _ := show(); !strings.Contains(out, "owner=berth\n") {
		t.Errorf("empty $BERTH_OWNER:\n%s", out)
	}
	// Bad values name the variable, not the flag, and are refused before
	// the command runs (issue 18: $BERTH_OWNER was reported as --owner,
	// and $BERTH_IMAGE_REMOTE was checked only when connecting to LXD).
	for name, v := range map[string]string{"log-level": "loud", "log-format": "xml", "pull": "sometimes",
		"owner": "Bad Owner", "image-remote": "c", "image-remote ": "a=https://a.example,c"} {
		name = strings.TrimSpace(name)
		t.Setenv(envName(name), v)
		code, out, errOut := show()
		if code != exitError || !strings.HasPrefix(errOut, "berth: $"+envName(name)+": ") || strings.Contains(errOut, "--"+name) || out != "" {
			t.Errorf("$%s=%s: code %d, stdout %q, stderr %q", envName(name), v, code, out, errOut)
		}
		t.Setenv(envName(name), values[name])
	}
	// The same values on the command line name the flag.
	for name, v := range map[string]string{"owner": "Bad Owner", "image-remote": "c"} {
		code, out, errOut := show("--"+name, v)
		if code != exitError || !strings.Contains(errOut, `"--`+name+`"`) || strings.Contains(errOut, "$BERTH") || out != "" {
			t.Errorf("--%s %s: code %d, stdout %q, stderr %q", name, v, code, out, errOut)
		}
	}
}

// berth run logs at info unless told otherwise (a daemon at the default
// level printed nothing in normal operation: issue 9 #15); the other
// commands stay at warn; an invalid --log-level is an error.
func TestLogLevelDefaultsAndValidation(t *testing.T) {
	t.Setenv("BERTH_LOG_FORMAT", "")
	// effective runs a command with its RunE replaced by one that prints
	// the log level the command's logger gets.
	effective := func(args ...string) (int, string) {
		root := newRootCmd()
		target, _, err := root.Find(args)
		if err != nil {
			t.Fatal(err)
		}
		target.RunE = func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), cmd.Flags().Lookup("log-level").Value)
			return nil
		}
		var out, errb bytes.Buffer
		code := execute(context.Background(), root, args, &out, &errb)
		return code, strings.TrimSpace(out.String() + errb.String())
	}
	for _, tc := range []struct {
		env  string
		args []string
		want string
	}{
		{"", []string{"run", "--repo", "."}, "info"},
		{"", []string{"--log-level", "warn", "run", "--repo", "."}, "warn"},
		{"", []string{"run", "--repo", ".", "--log-level=error"}, "error"},
		{"debug", []string{"run", "--repo", "."}, "debug"},
		{"", []string{"validate"}, "warn"},
		{"", []string{"plan"}, "warn"},
		{"", []string{"--log-level", "DEBUG", "plan"}, "debug"},
	} {
		t.Setenv("BERTH_LOG_LEVEL", tc.env)
		if code, got := effective(tc.args...); code != 0 || got != tc.want {
			t.Errorf("BERTH_LOG_LEVEL=%q berth %v: level %q (code %d), want %q", tc.env, tc.args, got, code, tc.want)
		}
	}
	t.Setenv("BERTH_LOG_LEVEL", "")

	// The logger honours the level: info lines show for run, not for plan.
	g := &globalOptions{logLevel: "info", logFormat: "text"}
	var buf bytes.Buffer
	cmd := &cobra.Command{}
	cmd.SetErr(&buf)
	g.logger(cmd).Info("berth run started")
	g.logLevel = "warn"
	g.logger(cmd).Info("hidden")
	if !strings.Contains(buf.String(), "berth run started") || strings.Contains(buf.String(), "hidden") {
		t.Errorf("logger output:\n%s", buf.String())
	}

	for _, bad := range []string{"loud", "", "warning+1", "5"} {
		code, _, errOut := berth(t, "--log-level", bad, "version")
		if code != exitError || !strings.Contains(errOut, "--log-level") || !strings.Contains(errOut, "want debug, info, warn or error") {
			t.Errorf("--log-level %q: code %d, stderr %q", bad, code, errOut)
		}
	}
}
