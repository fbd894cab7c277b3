package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// SOPS encrypts each value on its own with AES-256-GCM under the file's
// data key, a 32-byte IV, and the value's key path ("db:password:") as
// additional data, so a value moved to another key no longer opens. The
// stored form is ENC[AES256_GCM,data:<b64>,iv:<b64>,tag:<b64>,type:<t>]
// with the GCM tag split off the ciphertext.

const ivSize = 32

var encRE = regexp.MustCompile(`^ENC\[AES256_GCM,data:([^,]*),iv:([^,]+),tag:([^,]+),type:([a-z]+)\]$`)

// errMalformedEnc and errOpen never carry the value: callers add the key
// path and the file.
var (
	errMalformedEnc = errors.New("malformed ENC[...] value")
	errOpen         = errors.New("does not decrypt: tampered, or encrypted under another data key")
)

func isEnc(s string) bool { return strings.HasPrefix(s, "ENC[") }

// decryptValue opens one ENC[...] string; it returns the plaintext and the
// SOPS type name.
func decryptValue(s string, key []byte, ad string) (plain []byte, typ string, iv []byte, err error) {
	m := encRE.FindStringSubmatch(s)
	if m == nil {
		return nil, "", nil, errMalformedEnc
	}
	var parts [3][]byte
	for i := range parts {
		if parts[i], err = base64.StdEncoding.DecodeString(m[i+1]); err != nil {
			return nil, "", nil, errMalformedEnc
		}
	}
	data, iv, tag := parts[0], parts[1], parts[2]
	if len(iv) == 0 || len(tag) != 16 {
		return nil, "", nil, errMalformedEnc
	}
	gcm, err := newGCM(key, len(iv))
	if err != nil {
		return nil, "", nil, err
	}
	plain, err = gcm.Open(nil, iv, append(data, tag...), []byte(ad))
	if err != nil {
		return nil, "", nil, errOpen
	}
	switch m[4] {
	case "str", "int", "float", "bool", "time", "bytes", "comment":
	default:
		return nil, "", nil, errMalformedEnc
	}
	return plain, m[4], iv, nil
}

// encryptValue seals plain; iv is reused when given (the same value under
// the same key and path then keeps its ciphertext, so an edit's diff shows
// only what changed).
func encryptValue(plain []byte, typ string, key []byte, ad string, iv []byte) (string, error) {
	if iv == nil {
		iv = make([]byte, ivSize)
		if _, err := rand.Read(iv); err != nil {
			return "", err
		}
	}
	gcm, err := newGCM(key, len(iv))
	if err != nil {
		return "", err
	}
	out := gcm.Seal(nil, iv, plain, []byte(ad))
	n := len(out) - gcm.Overhead()
	enc := base64.StdEncoding
	return "ENC[AES256_GCM,data:" + enc.EncodeToString(out[:n]) + ",iv:" + enc.EncodeToString(iv) +
		",tag:" + enc.EncodeToString(out[n:]) + ",type:" + typ + "]", nil
}

func newGCM(key []byte, ivLen int) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, errors.New("bad data key")
	}
	return cipher.NewGCMWithNonceSize(block, ivLen)
}

// canonical is the text SOPS hashes into the MAC for a decrypted value of
// type typ: SOPS hashes the typed value, re-rendered (True/False for
// booleans, shortest decimal for floats), not the stored text.
func canonical(typ string, plain []byte) ([]byte, error) {
	s := string(plain)
	switch typ {
	case "str", "bytes", "comment":
		return plain, nil
	case "int":
		i, err := strconv.Atoi(s)
		if err != nil {
			return nil, errMalformedEnc
		}
		return []byte(strconv.Itoa(i)), nil
	case "float":
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, errMalformedEnc
		}
		return []byte(strconv.FormatFloat(f, 'f', -1, 64)), nil
	case "bool":
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, errMalformedEnc
		}
		return []byte(boolText(b)), nil
	case "time":
		var t time.Time
		if err := t.UnmarshalText(plain); err != nil {
			return nil, errMalformedEnc
		}
		return t.MarshalText()
	}
	return nil, errMalformedEnc
}

func boolText(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// adOf is the additional data of the value at path: its keys joined by
// ':' with a trailing ':' (list indices are not part of it).
func adOf(path []string) string { return strings.Join(path, ":") + ":" }
