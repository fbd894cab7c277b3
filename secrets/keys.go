package secrets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
)

// maxKeyFile bounds an age key file: a few keys take a few kB (a
// post-quantum identity is one line); a huge file is a wrong path.
const maxKeyFile = 1 << 20

// Keys are age identities loaded from files. The key text never comes from
// a flag value, where `ps` and shell history would show it.
type Keys struct {
	ids        []age.Identity
	recipients []string
	files      []string
}

// LoadKeys reads age identity files (age-keygen's format: one
// AGE-SECRET-KEY-1... or post-quantum AGE-SECRET-KEY-PQ-1... per line,
// '#' comments). Several files are for a rotation's overlap: old and new
// keys both open files. Errors name the file and line, never the key text.
func LoadKeys(paths ...string) (*Keys, error) {
	if len(paths) == 0 {
		return nil, errors.New("no age key file given (--age-key-file or $BERTH_AGE_KEY_FILE)")
	}
	k := &Keys{}
	for _, p := range paths {
		ids, err := loadKeyFile(p)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			k.ids = append(k.ids, id)
			k.recipients = append(k.recipients, recipientOf(id))
		}
		k.files = append(k.files, p)
	}
	return k, nil
}

func loadKeyFile(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age key file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("age key file %s: %w", path, err)
	}
	defer clear(data)
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("age key file %s: over %d bytes; is it the right file?", path, maxKeyFile)
	}
	var ids []age.Identity
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), maxKeyFile)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, err := parseIdentity(line)
		if err != nil {
			// The line may be a key with a typo: never quote it.
			return nil, fmt.Errorf("age key file %s, line %d: %v", path, n, err)
		}
		ids = append(ids, id)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("age key file %s: %w", path, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("age key file %s: no age identity in it (want lines AGE-SECRET-KEY-1... as age-keygen writes)", path)
	}
	return ids, nil
}

func parseIdentity(s string) (age.Identity, error) {
	switch {
	case strings.HasPrefix(s, "AGE-SECRET-KEY-PQ-1"):
		id, err := age.ParseHybridIdentity(s)
		if err != nil {
			return nil, errors.New("malformed post-quantum age identity (AGE-SECRET-KEY-PQ-1...)")
		}
		return id, nil
	case strings.HasPrefix(s, "AGE-SECRET-KEY-1"):
		id, err := age.ParseX25519Identity(s)
		if err != nil {
			return nil, errors.New("malformed age identity (AGE-SECRET-KEY-1...)")
		}
		return id, nil
	case strings.HasPrefix(s, "AGE-PLUGIN-"):
		return nil, errors.New("age plugin identities are not supported; use a native age key")
	}
	return nil, errors.New("not an age identity (want AGE-SECRET-KEY-1... or AGE-SECRET-KEY-PQ-1...)")
}

func recipientOf(id age.Identity) string {
	switch id := id.(type) {
	case *age.X25519Identity:
		return id.Recipient().String()
	case *age.HybridIdentity:
		return id.Recipient().String()
	}
	return ""
}

// Recipients are the public recipients of the loaded identities, in the
// order the files gave them.
func (k *Keys) Recipients() []string { return append([]string(nil), k.recipients...) }

// Files are the key files the identities came from (for error messages).
func (k *Keys) Files() []string { return append([]string(nil), k.files...) }

// String never shows a key: only the files they came from.
func (k *Keys) String() string {
	return fmt.Sprintf("age keys from %s", strings.Join(k.files, ", "))
}

// ParseRecipient checks an age recipient as sops accepts it for age:
// age1... (X25519) or age1pq1... (post-quantum hybrid).
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, "age1pq1"):
		r, err := age.ParseHybridRecipient(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a valid post-quantum age recipient: %v", s, err)
		}
		return r, nil
	case strings.HasPrefix(s, "age1") && strings.Count(s, "1") > 1 && !isX25519(s):
		return nil, fmt.Errorf("%q: age plugin recipients are not supported", s)
	case strings.HasPrefix(s, "age1"):
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a valid age recipient: %v", s, err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("%q is not an age recipient (want age1... or age1pq1...)", s)
}

func isX25519(s string) bool {
	_, err := age.ParseX25519Recipient(s)
	return err == nil
}
