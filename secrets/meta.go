package secrets

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"
	"gopkg.in/yaml.v3"
)

// ageKey is one age master key of a SOPS file: the recipient, and the
// file's data key encrypted to it (an armored age file).
type ageKey struct {
	Recipient string `yaml:"recipient"`
	Enc       string `yaml:"enc"`
}

type keyGroup struct {
	Age   []ageKey       `yaml:"age,omitempty"`
	Other map[string]any `yaml:",inline"`
}

// sopsMeta is the "sops" section of a file, as SOPS writes it. Fields berth
// does not use (other key types) are kept in Other so that a rotation that
// keeps the data key leaves them working.
type sopsMeta struct {
	KeyGroups               []keyGroup     `yaml:"key_groups,omitempty"`
	ShamirThreshold         int            `yaml:"shamir_threshold,omitempty"`
	Age                     []ageKey       `yaml:"age,omitempty"`
	LastModified            string         `yaml:"lastmodified"`
	MAC                     string         `yaml:"mac"`
	UnencryptedSuffix       string         `yaml:"unencrypted_suffix,omitempty"`
	EncryptedSuffix         string         `yaml:"encrypted_suffix,omitempty"`
	UnencryptedRegex        string         `yaml:"unencrypted_regex,omitempty"`
	EncryptedRegex          string         `yaml:"encrypted_regex,omitempty"`
	UnencryptedCommentRegex string         `yaml:"unencrypted_comment_regex,omitempty"`
	EncryptedCommentRegex   string         `yaml:"encrypted_comment_regex,omitempty"`
	MACOnlyEncrypted        bool           `yaml:"mac_only_encrypted,omitempty"`
	Version                 string         `yaml:"version"`
	Other                   map[string]any `yaml:",inline"`

	unRE, enRE *regexp.Regexp
}

// sopsVersion is the format version berth writes: the sops release whose
// files it was tested against.
const sopsVersion = "3.13.3"

func parseMeta(n *yaml.Node) (*sopsMeta, error) {
	m := &sopsMeta{}
	if err := n.Decode(m); err != nil {
		return nil, fmt.Errorf("malformed sops metadata: %v", err)
	}
	if len(m.KeyGroups) > 1 || m.ShamirThreshold > 1 {
		return nil, errors.New("sops key groups with a Shamir threshold are not supported: encrypt to age recipients in one group")
	}
	if m.UnencryptedCommentRegex != "" || m.EncryptedCommentRegex != "" {
		return nil, errors.New("sops comment regexes (unencrypted_comment_regex, encrypted_comment_regex) are not supported")
	}
	if m.MAC == "" || m.LastModified == "" {
		return nil, errors.New("malformed sops metadata: no mac or lastmodified")
	}
	var err error
	if m.UnencryptedRegex != "" {
		if m.unRE, err = regexp.Compile(m.UnencryptedRegex); err != nil {
			return nil, fmt.Errorf("sops unencrypted_regex: %v", err)
		}
	}
	if m.EncryptedRegex != "" {
		if m.enRE, err = regexp.Compile(m.EncryptedRegex); err != nil {
			return nil, fmt.Errorf("sops encrypted_regex: %v", err)
		}
	}
	return m, nil
}

// ageKeys are the file's age master keys, wherever SOPS put them.
func (m *sopsMeta) ageKeys() []ageKey {
	if len(m.KeyGroups) == 1 {
		return m.KeyGroups[0].Age
	}
	return m.Age
}

func (m *sopsMeta) setAgeKeys(keys []ageKey) {
	if len(m.KeyGroups) == 1 {
		m.KeyGroups[0].Age = keys
		return
	}
	m.Age = keys
}

// otherKeyTypes names the non-age master keys (pgp, kms, ...) in the file.
func (m *sopsMeta) otherKeyTypes() []string {
	var out []string
	add := func(o map[string]any) {
		for k, v := range o {
			if l, ok := v.([]any); ok && len(l) > 0 {
				out = append(out, k)
			}
		}
	}
	add(m.Other)
	for _, g := range m.KeyGroups {
		add(g.Other)
	}
	sort.Strings(out)
	return out
}

func (m *sopsMeta) recipients() []string {
	var out []string
	for _, k := range m.ageKeys() {
		out = append(out, k.Recipient)
	}
	return out
}

// shouldEncrypt tells whether SOPS encrypts the value at path, by the
// file's suffix and regex rules (a key matching anywhere on the path).
func (m *sopsMeta) shouldEncrypt(path []string) bool {
	enc := true
	any := func(f func(string) bool) bool {
		for _, p := range path {
			if f(p) {
				return true
			}
		}
		return false
	}
	if s := m.UnencryptedSuffix; s != "" && any(func(p string) bool { return strings.HasSuffix(p, s) }) {
		enc = false
	}
	if s := m.EncryptedSuffix; s != "" {
		enc = any(func(p string) bool { return strings.HasSuffix(p, s) })
	}
	if m.unRE != nil && any(m.unRE.MatchString) {
		enc = false
	}
	if m.enRE != nil {
		enc = any(m.enRE.MatchString)
	}
	return enc
}

// macAD is the additional data of the encrypted MAC: the lastmodified
// time, as SOPS formats it.
func (m *sopsMeta) macAD() (string, error) {
	t, err := time.Parse(time.RFC3339, m.LastModified)
	if err != nil {
		return "", fmt.Errorf("malformed sops lastmodified")
	}
	return t.Format(time.RFC3339), nil
}

// dataKey unwraps the data key with the first age key that opens it.
func (m *sopsMeta) dataKey(keys *Keys) ([]byte, error) {
	for _, k := range m.ageKeys() {
		r, err := age.Decrypt(armor.NewReader(strings.NewReader(k.Enc)), keys.ids...)
		if err != nil {
			continue
		}
		dk, err := io.ReadAll(io.LimitReader(r, 64))
		if err != nil || len(dk) != 32 {
			continue
		}
		return dk, nil
	}
	return nil, ErrNoKey
}

// wrap encrypts the data key to each recipient, one age file per
// recipient as SOPS does (a post-quantum and a classic recipient cannot
// share one age file).
func wrap(dataKey []byte, recipients []string) ([]ageKey, error) {
	var out []ageKey
	for _, s := range recipients {
		r, err := ParseRecipient(s)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		aw := armor.NewWriter(&buf)
		w, err := age.Encrypt(aw, r)
		if err != nil {
			return nil, fmt.Errorf("age recipient %s: %v", s, err)
		}
		if _, err := w.Write(dataKey); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		if err := aw.Close(); err != nil {
			return nil, err
		}
		out = append(out, ageKey{Recipient: strings.TrimSpace(s), Enc: buf.String()})
	}
	return out, nil
}

func newDataKey() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
}
