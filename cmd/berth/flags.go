package main

import (
	"fmt"
	"github.com/berth-gitops/berth/spec"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Every number a flag takes is bounded: NaN, ±Inf, negative or huge values
// are refused when the flag is parsed, with the accepted range in the
// message. Flags register through these types instead of Float64Var or
// DurationVar.

// fractionFlag is a share in (min, max]: --max-prune.
type fractionFlag struct {
	p        *float64
	min, max float64 // (min, max]
}

func newFractionFlag(p *float64, def, min, max float64) *fractionFlag {
	*p = def
	return &fractionFlag{p: p, min: min, max: max}
}

func (f *fractionFlag) String() string { return strconv.FormatFloat(*f.p, 'g', -1, 64) }
func (f *fractionFlag) Type() string   { return "float" }

func (f *fractionFlag) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%q is not a number; want a number in (%g, %g]", s, f.min, f.max)
	}
	if v <= f.min || v > f.max {
		return fmt.Errorf("%g is out of range; want a number in (%g, %g]", v, f.min, f.max)
	}
	*f.p = v
	return nil
}

// durationFlag is a duration in [min, max].
type durationFlag struct {
	p        *time.Duration
	min, max time.Duration
}

func newDurationFlag(p *time.Duration, def, min, max time.Duration) *durationFlag {
	*p = def
	return &durationFlag{p: p, min: min, max: max}
}

func (f *durationFlag) String() string { return spec.ShortDuration(*f.p) }
func (f *durationFlag) Type() string   { return "duration" }

func (f *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration; want one between %s and %s, e.g. 30s or 5m", s, spec.ShortDuration(f.min), spec.ShortDuration(f.max))
	}
	if v < f.min || v > f.max {
		return fmt.Errorf("%s is out of range; want a duration between %s and %s", spec.ShortDuration(v), spec.ShortDuration(f.min), spec.ShortDuration(f.max))
	}
	*f.p = v
	return nil
}

// logLevelFlag is one of slog's four level names.
type logLevelFlag struct{ p *string }

func (f logLevelFlag) String() string { return *f.p }
func (f logLevelFlag) Type() string   { return "level" }

func (f logLevelFlag) Set(s string) error {
	switch v := strings.ToLower(strings.TrimSpace(s)); v {
	case "debug", "info", "warn", "error":
		*f.p = v
		return nil
	}
	return fmt.Errorf("%q: want debug, info, warn or error", s)
}

// choiceFlag is one of a fixed set of words.
type choiceFlag struct {
	p       *string
	choices []string
}

func (f choiceFlag) String() string { return *f.p }
func (f choiceFlag) Type() string   { return "string" }

func (f choiceFlag) Set(s string) error {
	for _, c := range f.choices {
		if s == c {
			*f.p = s
			return nil
		}
	}
	return fmt.Errorf("%q: want %s", s, orList(f.choices))
}

// checkedString is a string flag whose value is checked when it is set:
// a bad value is then refused before any work, and named as the flag or
// as its environment variable, whichever gave it (applyEnv sets both the
// same way). A check after parsing could name only one of them.
type checkedString struct {
	p     *string
	check func(string) error
}

func newCheckedString(p *string, def string, check func(string) error) checkedString {
	*p = def
	return checkedString{p: p, check: check}
}

func (f checkedString) String() string { return *f.p }
func (f checkedString) Type() string   { return "string" }

func (f checkedString) Set(s string) error {
	if err := f.check(s); err != nil {
		return err
	}
	*f.p = s
	return nil
}

// checkedList is a repeatable string flag (like StringArray: no comma
// splitting on the command line) whose every item is checked when it is
// set, as checkedString's value is.
type checkedList struct {
	p     *[]string
	check func(string) error
}

func (f checkedList) String() string { return "[" + strings.Join(*f.p, ",") + "]" }
func (f checkedList) Type() string   { return "stringArray" }
func (f checkedList) Set(s string) error {
	return f.Append(s)
}

func (f checkedList) Append(s string) error {
	if err := f.check(s); err != nil {
		return err
	}
	*f.p = append(*f.p, s)
	return nil
}

func (f checkedList) Replace(items []string) error {
	for _, s := range items {
		if err := f.check(s); err != nil {
			return err
		}
	}
	*f.p = append([]string(nil), items...)
	return nil
}

func (f checkedList) GetSlice() []string { return append([]string(nil), *f.p...) }

func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// envName is the environment variable of a global flag: --lxd-cert is
// $BERTH_LXD_CERT.
func envName(flag string) string {
	return "BERTH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// envFlags are the global flags that read an environment variable:
// all of the root's persistent flags but the hidden ones.
func envFlags(root *cobra.Command) []*pflag.Flag {
	var out []*pflag.Flag
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !f.Hidden && f.Name != "help" {
			out = append(out, f)
		}
	})
	return out
}

// documentEnv appends "($BERTH_X)" to the usage of each global flag.
func documentEnv(root *cobra.Command) {
	for _, f := range envFlags(root) {
		f.Usage += " ($" + envName(f.Name) + ")"
	}
}

// applyEnv gives each global flag not set on the command line the value of
// its environment variable, when that is set and not empty. The value is
// checked like the flag's; a repeatable flag takes a comma-separated list.
func applyEnv(cmd *cobra.Command) error {
	for _, f := range envFlags(cmd.Root()) {
		// The command's merged flag set knows whether the flag was given.
		if fl := cmd.Flags().Lookup(f.Name); fl != nil && fl.Changed {
			continue
		}
		name := envName(f.Name)
		v := os.Getenv(name)
		if v == "" {
			continue
		}
		var err error
		if sv, isSlice := f.Value.(pflag.SliceValue); isSlice {
			var items []string
			for _, item := range strings.Split(v, ",") {
				if item = strings.TrimSpace(item); item != "" {
					items = append(items, item)
				}
			}
			err = sv.Replace(items)
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			return fmt.Errorf("$%s: %w", name, err)
		}
	}
	return nil
}

// flagOrEnvSet reports whether a global flag was given on the command line
// or through its environment variable.
func flagOrEnvSet(cmd *cobra.Command, name string) bool {
	if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
		return true
	}
	return os.Getenv(envName(name)) != ""
}

// pathListFlag is a repeatable path flag: --age-key-file. Its environment
// variable takes a list separated by commas (as every repeatable global
// flag's) or colons (as $PATH and $SOPS_AGE_KEY_FILE are).
type pathListFlag struct{ p *[]string }

func (f pathListFlag) String() string { return "[" + strings.Join(*f.p, ",") + "]" }
func (f pathListFlag) Type() string   { return "path" }
func (f pathListFlag) Set(s string) error {
	return f.Append(s)
}

func (f pathListFlag) Append(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("empty path")
	}
	if strings.HasPrefix(s, "AGE-SECRET-KEY-") {
		// The key itself never comes from a flag: every user of the
		// machine sees a command line (ps).
		return fmt.Errorf("want the path of an age identity file, not a key")
	}
	*f.p = append(*f.p, s)
	return nil
}

// Replace is how applyEnv sets the list (already split on commas).
func (f pathListFlag) Replace(items []string) error {
	var out []string
	for _, item := range items {
		for _, p := range strings.Split(item, ":") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	*f.p = nil
	for _, p := range out {
		if err := f.Append(p); err != nil {
			return err
		}
	}
	return nil
}

func (f pathListFlag) GetSlice() []string { return append([]string(nil), *f.p...) }

// registerAgeKeyFile adds the global --age-key-file: the age identities
// that open SOPS-encrypted secrets. The key comes from a file, never
// from a flag's value, which `ps` and shell history would show.
func registerAgeKeyFile(root *cobra.Command, files *[]string) {
	root.PersistentFlags().Var(pathListFlag{files}, "age-key-file",
		"age identity file (age-keygen's format) that opens SOPS-encrypted secrets; repeatable, so old and new keys overlap during a rotation")
}
