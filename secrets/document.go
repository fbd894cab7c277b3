package secrets

import (
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MaxFileSize bounds a secret file: secrets are passwords, tokens and
// keys, and a file decrypted into memory and onto a tmpfs must stay small.
const MaxFileSize = 1 << 20

// The kinds of failure, for errors.Is. Every error also names the file,
// and none carries a decrypted byte.
var (
	ErrNotEncrypted = errors.New("not encrypted with SOPS")
	ErrNoKey        = errors.New("no age key opens it")
	ErrMAC          = errors.New("MAC mismatch: the file was changed without its data key (tampered, or edited by hand)")
	ErrTooLarge     = errors.New("too large for a secret file")
	ErrNoPath       = errors.New("no such key")
)

// macOnlyInit starts the MAC of a file with mac_only_encrypted: SOPS's
// constant (the SHA-256 of "sops"), so that such a MAC never equals the
// MAC over all values.
var macOnlyInit = []byte{0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b,
	0x0b, 0x97, 0x5b, 0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69}

// Metadata is what a SOPS file says without being decrypted: SOPS keeps
// the keys and its metadata in plaintext.
type Metadata struct {
	Format string
	// Recipients are the age recipients the data key is encrypted to.
	Recipients []string
	// Keys are the dotted paths of every key in the document ("db",
	// "db.password"; list items by index), the metadata left out.
	Keys []string
	// OtherKeyTypes are non-age master keys (pgp, kms, ...) berth ignores.
	OtherKeyTypes []string
	// LastModified is SOPS's lastmodified (RFC 3339).
	LastModified string
}

// HasKey tells whether the dotted path is a key of the document.
func (m *Metadata) HasKey(path string) bool {
	for _, k := range m.Keys {
		if k == path {
			return true
		}
	}
	return false
}

// Document is a decrypted SOPS file. It does not format either: %v of a
// Document prints its name. Its state sits behind a pointer, out of reach
// of fmt's reflection (see Value).
type Document struct{ *docState }

type docState struct {
	name, format string
	doc          *yaml.Node // decrypted, without the metadata
	meta         *sopsMeta
	dataKey      []byte
	// ivs keeps each value's IV by path and plaintext: sealed again under
	// the same data key, an unchanged value keeps its ciphertext.
	ivs map[string][]byte
}

func (d *Document) String() string             { return "secrets.Document(" + d.name + ")" }
func (d *Document) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(d.String())) }

// Name is the file name the document was opened as.
func (d *Document) Name() string { return d.name }

// Recipients are the age recipients the file was encrypted to.
func (d *Document) Recipients() []string { return d.meta.recipients() }

func parse(name string, data []byte) (string, *yaml.Node, *sopsMeta, error) {
	if len(data) > MaxFileSize {
		return "", nil, nil, fmt.Errorf("%s: %d bytes: %w (the limit is %d bytes, 1 MiB)", name, len(data), ErrTooLarge, MaxFileSize)
	}
	format := FormatOf(name)
	doc, metaNode, err := load(format, data)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s (%s): %v", name, format, err)
	}
	if metaNode == nil {
		return "", nil, nil, fmt.Errorf("%s: %w (no sops metadata in it; encrypt it with `sops encrypt --age RECIPIENT`)", name, ErrNotEncrypted)
	}
	meta, err := parseMeta(metaNode)
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: %v", name, err)
	}
	if format == FormatBinary && find(doc, []string{"data"}) == nil {
		return "", nil, nil, fmt.Errorf("%s: binary SOPS file without its data key", name)
	}
	return format, doc, meta, nil
}

// Inspect reads a SOPS file's metadata without decrypting it. name's
// extension picks the format (yaml, json, dotenv, ini; anything else is
// binary). A plaintext file is ErrNotEncrypted.
func Inspect(name string, data []byte) (*Metadata, error) {
	format, doc, meta, err := parse(name, data)
	if err != nil {
		return nil, err
	}
	m := &Metadata{Format: format, Recipients: meta.recipients(), OtherKeyTypes: meta.otherKeyTypes(), LastModified: meta.LastModified}
	keyPaths(doc, "", &m.Keys)
	return m, nil
}

// Open decrypts a SOPS file with keys and verifies its MAC. Errors name
// the file and, when no key opens it, its recipients and the keys'.
func Open(name string, data []byte, keys *Keys) (*Document, error) {
	format, doc, meta, err := parse(name, data)
	if err != nil {
		return nil, err
	}
	if len(meta.ageKeys()) == 0 {
		return nil, fmt.Errorf("%s: encrypted to no age recipient (only %s): berth decrypts with age keys", name, strings.Join(meta.otherKeyTypes(), ", "))
	}
	if keys == nil || len(keys.ids) == 0 {
		return nil, fmt.Errorf("%s: %w: no age key loaded (--age-key-file); it is encrypted to %s", name, ErrNoKey, strings.Join(meta.recipients(), ", "))
	}
	dk, err := meta.dataKey(keys)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: it is encrypted to %s; the keys from %s are for %s", name, ErrNoKey,
			strings.Join(meta.recipients(), ", "), strings.Join(keys.files, ", "), strings.Join(keys.recipients, ", "))
	}
	d := &Document{&docState{name: name, format: format, doc: doc, meta: meta, dataKey: dk, ivs: map[string][]byte{}}}
	sum, err := d.decrypt()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ad, err := meta.macAD()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	mac, typ, _, err := decryptValue(meta.MAC, dk, ad)
	if err != nil || typ != "str" || subtle.ConstantTimeCompare(mac, []byte(sum)) != 1 {
		return nil, fmt.Errorf("%s: %w", name, ErrMAC)
	}
	return d, nil
}

func (d *docState) newMAC() hash.Hash {
	h := sha512.New()
	if d.meta.MACOnlyEncrypted {
		h.Write(macOnlyInit)
	}
	return h
}

func ivKey(ad, typ string, plain []byte) string { return ad + "\x00" + typ + "\x00" + string(plain) }

// decrypt decrypts d.doc in place and returns its MAC (upper-case hex of
// the SHA-512 over the values, as SOPS computes it).
func (d *docState) decrypt() (string, error) {
	h := d.newMAC()
	v := &visitor{
		leaf: func(path []string, n *yaml.Node) error {
			enc := d.meta.shouldEncrypt(path)
			var mb []byte
			switch {
			case enc && n.ShortTag() == "!!str" && n.Value == "":
				// SOPS leaves an empty string as it is.
			case enc:
				if n.ShortTag() != "!!str" || !isEnc(n.Value) {
					return fmt.Errorf("%s: value is not encrypted, though the file's rules say it must be", strings.Join(path, "."))
				}
				plain, typ, iv, err := decryptValue(n.Value, d.dataKey, adOf(path))
				if err != nil {
					return fmt.Errorf("%s: %w", strings.Join(path, "."), err)
				}
				if mb, err = canonical(typ, plain); err != nil {
					return fmt.Errorf("%s: %w", strings.Join(path, "."), err)
				}
				d.ivs[ivKey(adOf(path), typ, plain)] = iv
				setPlain(n, typ, plain)
			default:
				_, b, err := typedPlain(n)
				if err != nil {
					return fmt.Errorf("%s: %v", strings.Join(path, "."), err)
				}
				mb = b
			}
			if !d.meta.MACOnlyEncrypted || enc {
				h.Write(mb)
			}
			return nil
		},
		comment: func(path []string, line string) (string, error) {
			if !d.meta.shouldEncrypt(path) || !isEnc(line) {
				return line, nil
			}
			plain, _, iv, err := decryptValue(line, d.dataKey, adOf(path))
			if err != nil {
				// As sops: a comment that does not decrypt stays as it is
				// (comments are not in the MAC).
				return line, nil
			}
			d.ivs[ivKey(adOf(path), "comment", plain)] = iv
			return string(plain), nil
		},
	}
	if err := walkNode(d.doc, nil, v); err != nil {
		return "", err
	}
	return fmt.Sprintf("%X", h.Sum(nil)), nil
}

// Lookup is the value at a dotted path ("db.password"; a list item by
// its index). A mapping or list is rendered in the file's format.
func (d *Document) Lookup(path string) (Value, error) {
	if path == "" {
		return Value{}, fmt.Errorf("%s: empty key path", d.name)
	}
	n := find(d.doc, strings.Split(path, "."))
	if n == nil {
		return Value{}, fmt.Errorf("%s: %w %q", d.name, ErrNoPath, path)
	}
	if n.Kind == yaml.ScalarNode {
		if n.ShortTag() == "!!null" {
			return newValue(nil), nil
		}
		return newValue([]byte(n.Value)), nil
	}
	format := d.format
	if format == FormatDotenv || format == FormatBinary {
		format = FormatYAML
	}
	b, err := emitSubtree(format, n)
	if err != nil {
		return Value{}, fmt.Errorf("%s: %s: %v", d.name, path, err)
	}
	return newValue(b), nil
}

func emitSubtree(format string, n *yaml.Node) ([]byte, error) {
	if format == FormatJSON {
		return emit(format, &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}, nil)
	}
	return yaml.Marshal(n)
}

// Whole is the whole decrypted document in its format, without the sops
// metadata; for a binary file, the bytes that were encrypted.
func (d *Document) Whole() Value {
	if d.format == FormatBinary {
		return newValue([]byte(find(d.doc, []string{"data"}).Value))
	}
	b, err := emit(d.format, d.doc, nil)
	if err != nil {
		return newValue(nil)
	}
	return newValue(b)
}

// Replace is the document with its content replaced by plain (in the
// file's format; a binary file's bytes as they are), to be sealed again
// with the same data key: what `berth secrets edit` does.
func (d *Document) Replace(plain []byte) (*Document, error) {
	var doc *yaml.Node
	if d.format == FormatBinary {
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Tag: "!!str", Value: "data"}, {Kind: yaml.ScalarNode, Tag: "!!str", Value: string(plain)}}}
		doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{m}}
	} else {
		var meta *yaml.Node
		var err error
		if doc, meta, err = load(d.format, plain); err != nil {
			return nil, fmt.Errorf("%s: the edited text: %v", d.name, err)
		}
		if meta != nil {
			return nil, fmt.Errorf("%s: the edited text has a top-level %q key, which is SOPS's own", d.name, metaKey)
		}
	}
	if len(plain) > MaxFileSize {
		return nil, fmt.Errorf("%s: the edited text: %w", d.name, ErrTooLarge)
	}
	nd := *d.docState
	nd.doc = doc
	return &Document{&nd}, nil
}

// Seal encrypts the document for recipients and returns the file's new
// bytes. freshKey draws a new data key (after a recipient is removed:
// whoever holds the removed key knows the old data key, and must not read
// later edits); otherwise the data key, the wrapped keys of recipients
// that stay, and the ciphertext of unchanged values are kept, so the diff
// shows only what changed.
func (d *Document) Seal(recipients []string, freshKey bool) ([]byte, error) {
	if len(recipients) == 0 {
		return nil, fmt.Errorf("%s: no age recipient to encrypt to", d.name)
	}
	meta := *d.meta
	meta.KeyGroups = append([]keyGroup(nil), d.meta.KeyGroups...)
	dk, ivs := d.dataKey, d.ivs
	if freshKey {
		if other := meta.otherKeyTypes(); len(other) > 0 {
			return nil, fmt.Errorf("%s: also encrypted to %s, which berth cannot give a new data key; remove those with sops first", d.name, strings.Join(other, ", "))
		}
		var err error
		if dk, err = newDataKey(); err != nil {
			return nil, err
		}
		ivs = nil
	}
	ak, err := d.wrapFor(recipients, dk, freshKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", d.name, err)
	}
	meta.setAgeKeys(ak)
	doc := cloneNode(d.doc)
	sum, err := d.encrypt(doc, &meta, dk, ivs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	meta.LastModified = time.Now().UTC().Format(time.RFC3339)
	meta.Version = sopsVersion
	ad, _ := meta.macAD()
	if meta.MAC, err = encryptValue([]byte(sum), "str", dk, ad, nil); err != nil {
		return nil, err
	}
	var mn yaml.Node
	if err := mn.Encode(&meta); err != nil {
		return nil, err
	}
	return emit(d.format, doc, &mn)
}

// wrapFor wraps dk for each recipient, keeping the wrapped key of a
// recipient that had one when the data key stays.
func (d *docState) wrapFor(recipients []string, dk []byte, fresh bool) ([]ageKey, error) {
	old := map[string]string{}
	if !fresh {
		for _, k := range d.meta.ageKeys() {
			old[k.Recipient] = k.Enc
		}
	}
	var out []ageKey
	seen := map[string]bool{}
	for _, r := range recipients {
		r = strings.TrimSpace(r)
		if seen[r] {
			continue
		}
		seen[r] = true
		if enc, ok := old[r]; ok {
			out = append(out, ageKey{Recipient: r, Enc: enc})
			continue
		}
		k, err := wrap(dk, []string{r})
		if err != nil {
			return nil, err
		}
		out = append(out, k...)
	}
	return out, nil
}

// encrypt encrypts doc in place under dk by meta's rules and returns its MAC.
func (d *docState) encrypt(doc *yaml.Node, meta *sopsMeta, dk []byte, ivs map[string][]byte) (string, error) {
	h := sha512.New()
	if meta.MACOnlyEncrypted {
		h.Write(macOnlyInit)
	}
	v := &visitor{
		leaf: func(path []string, n *yaml.Node) error {
			typ, plain, err := typedPlain(n)
			if err != nil {
				return fmt.Errorf("%s: %v", strings.Join(path, "."), err)
			}
			enc := meta.shouldEncrypt(path)
			if !meta.MACOnlyEncrypted || enc {
				h.Write(plain)
			}
			if !enc || (typ == "str" && len(plain) == 0) {
				return nil
			}
			s, err := encryptValue(plain, typ, dk, adOf(path), ivs[ivKey(adOf(path), typ, plain)])
			if err != nil {
				return err
			}
			n.Kind, n.Tag, n.Style, n.Value = yaml.ScalarNode, "!!str", 0, s
			return nil
		},
		comment: func(path []string, line string) (string, error) {
			if line == "" || !meta.shouldEncrypt(path) || isEnc(line) {
				return line, nil
			}
			return encryptValue([]byte(line), "comment", dk, adOf(path), ivs[ivKey(adOf(path), "comment", []byte(line))])
		},
	}
	if err := walkNode(doc, nil, v); err != nil {
		return "", err
	}
	return fmt.Sprintf("%X", h.Sum(nil)), nil
}

// Encrypt encrypts a plaintext file (in the format name's extension
// picks) to age recipients, as `sops encrypt --age` does: every value
// but those under a key ending in _unencrypted.
func Encrypt(name string, plain []byte, recipients []string) ([]byte, error) {
	if len(plain) > MaxFileSize {
		return nil, fmt.Errorf("%s: %w", name, ErrTooLarge)
	}
	d := &Document{&docState{name: name, format: FormatOf(name), meta: &sopsMeta{UnencryptedSuffix: "_unencrypted"}}}
	nd, err := d.Replace(plain)
	if err != nil {
		return nil, err
	}
	return nd.Seal(recipients, true)
}
