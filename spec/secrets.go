package spec

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/berth-gitops/berth/secrets"
)

// Secrets in the spec: container.secretFiles and secret provision files.
// A load always checks that each referenced file exists, is encrypted
// with SOPS and holds the key asked for, from the file's plaintext
// metadata (secrets.Inspect); only with Options.Secrets does it decrypt.
// No message here ever holds a byte of a file's content: a plaintext file
// where an encrypted one belongs is a secret in the clear, and a parser's
// error could quote it.

// DefaultSecretMode and DefaultSecretOwner are a secret file's defaults:
// readable by root alone unless the spec says who.
const (
	DefaultSecretMode  = "0400"
	DefaultSecretOwner = "0:0"
)

// SecretDir is where the app container's secrets conventionally go
// (the official images' _FILE variables point there). Any absolute path
// works: the file is a bind mount of a file on a tmpfs in the instance.
const SecretDir = "/run/secrets"

// MaxSecretFileSize bounds an encrypted file a secret is read from: 1 MiB.
// Secrets are passwords, tokens, keys and small configs.
const MaxSecretFileSize = 1 << 20

var secretFileFields = fields[SecretFile]{
	{name: "file", required: true, decode: func(d *decoder, v *yaml.Node, f *SecretFile) {
		if s, ok := d.keptStr(v, checkRepoPath); ok {
			f.File = s
		}
	}},
	{name: "key", decode: func(d *decoder, v *yaml.Node, f *SecretFile) {
		if s, ok := d.keptStr(v, checkKeyPath); ok {
			f.Key = s
		}
	}},
	{name: "target", required: true, decode: func(d *decoder, v *yaml.Node, f *SecretFile) {
		if s, ok := d.str(v, ""); ok {
			f.Target = s
			if msg := checkInstancePath(s); msg != "" {
				d.errorf(d.resolve(v), "%s", strings.Replace(msg, "in the instance", "in the app container", 1))
			}
		}
	}},
	{name: "mode", decode: func(d *decoder, v *yaml.Node, f *SecretFile) {
		if m, ok := checkedStr(d, v, "write the mode as a quoted octal string", checkFileMode); ok {
			f.Mode = m
		}
	}},
	{name: "owner", decode: func(d *decoder, v *yaml.Node, f *SecretFile) {
		if o, ok := checkedStr(d, v, "", checkFileOwner); ok {
			f.Owner = o
		}
	}},
}

// checkKeyPath checks a dotted key path: db.password.
func checkKeyPath(k string) string {
	if k == "" {
		return "must be a dotted key path in the file, like db.password; leave key out for the whole document"
	}
	for _, part := range strings.Split(k, ".") {
		if part == "" {
			return fmt.Sprintf("must be a dotted key path like db.password, without empty parts: %q", k)
		}
	}
	return ""
}

// secretFiles reads container.secretFiles: each target once.
func (d *decoder) secretFiles(n *yaml.Node) []SecretFile {
	items, _ := d.list(n)
	if len(items) > MaxProvisionFiles {
		d.errorf(d.resolve(n), "has %d secret files; an app may have at most %d", len(items), MaxProvisionFiles)
		return nil
	}
	targets := map[string]int{}
	var out []SecretFile
	for i, item := range items {
		d.pushIndex(i, item)
		f := SecretFile{Mode: DefaultSecretMode, Owner: DefaultSecretOwner}
		problems := len(d.diags)
		if object(d, item, secretFileFields, &f) && len(d.diags) == problems {
			if first, dup := targets[f.Target]; dup {
				d.push("target", nil)
				d.errorf(d.member(item, "target"), "target %q is already written by secretFiles[%d]", f.Target, first)
				d.pop()
			} else {
				targets[f.Target] = i
			}
			d.push("target", nil)
			d.secretTargets = append(d.secretTargets, d.mark(d.member(item, "target")))
			d.pop()
			data, ok := d.secretData(item, "file", f.File)
			if ok {
				f.Value, f.MAC = d.openSecret(item, "file", f.File, data, f.Key)
			}
		}
		out = append(out, f)
		d.pop()
	}
	return out
}

// secretProvisionFile checks, and with keys opens, a provision file
// marked secret: f.Content holds its encrypted bytes.
func (d *decoder) secretProvisionFile(item *yaml.Node, f *ProvisionFile) {
	if f.Digest == "" {
		return // the source was not read; its problem is reported
	}
	if len(f.Content) > MaxSecretFileSize {
		d.push("source", nil)
		d.errorf(d.member(item, "source"), "secret %q is too large: %d bytes, an encrypted secret file may have at most %d KiB", f.Source, len(f.Content), MaxSecretFileSize>>10)
		d.pop()
		return
	}
	f.Value, f.MAC = d.openSecret(item, "source", f.Source, f.Content, "")
}

// secretData reads a secret's encrypted file from the repository, with
// the same rules as provision files (no symlink, no way out, one budget).
func (d *decoder) secretData(item *yaml.Node, field, name string) ([]byte, bool) {
	d.push(field, nil)
	defer d.pop()
	at := d.member(item, field)
	if d.repo == nil || d.repo.fsys == nil {
		d.errorf(at, "cannot read %q: secrets are read from the repository, and none was given (load the spec tree from a repository or a folder, not a single file)", name)
		return nil, false
	}
	data, msg := d.repo.read(d.ctx, name)
	if msg != "" {
		d.errorf(at, "%s", msg)
		return nil, false
	}
	if len(data) > MaxSecretFileSize {
		d.errorf(at, "secret %q is too large: %d bytes, an encrypted secret file may have at most %d KiB", name, len(data), MaxSecretFileSize>>10)
		return nil, false
	}
	return data, true
}

// openSecret checks an encrypted file's metadata and that it holds key
// ("" for the whole document); with keys it decrypts and returns the value
// and its MAC. Problems are reported at the item's field that names the
// file (file, or a provision file's source) or at its key, naming the file.
func (d *decoder) openSecret(item *yaml.Node, field, name string, data []byte, key string) (secrets.Value, MAC) {
	d.push(field, nil)
	at := d.member(item, field)
	meta, err := secrets.Inspect(name, data)
	if err != nil {
		// The parser's error is left out: it could quote the file, and a
		// file that is not encrypted is a secret in the clear.
		d.errorf(at, "%q is not a SOPS-encrypted file (no readable sops metadata): encrypt it with sops before it is committed, and make sure it was not committed in the clear", name)
		d.pop()
		return secrets.Value{}, ""
	}
	d.pop()
	if key != "" && !meta.HasKey(key) {
		d.push("key", nil)
		d.errorf(d.member(item, "key"), "%q has no key %q (its keys are dotted paths like db.password)", name, key)
		d.pop()
		return secrets.Value{}, ""
	}
	if d.opts.Secrets == nil {
		return secrets.Value{}, ""
	}
	d.push(field, nil)
	defer d.pop()
	doc, msg := d.repo.open(name, data, d.opts.Secrets.Keys, meta)
	if msg != "" {
		d.errorf(at, "%s", msg)
		return secrets.Value{}, ""
	}
	salt, msg := d.repo.salt(d.opts.Secrets.Salt)
	if msg != "" {
		d.errorf(at, "%q not opened: %s", name, msg)
		return secrets.Value{}, ""
	}
	v := doc.Whole()
	if key != "" {
		if v, err = doc.Lookup(key); err != nil {
			d.errorf(at, "%q: key %q: %s", name, key, EscapeText(err.Error()))
			return secrets.Value{}, ""
		}
	}
	mac := hmac.New(sha256.New, salt)
	mac.Write(v.Reveal())
	return v, MAC(hex.EncodeToString(mac.Sum(nil)))
}

// MAC is the HMAC-SHA256 (hex) of a secret's value under the owner's
// salt. It does not format either: it goes into hashes, and people see
// that a secret changed, never a digest of it.
type MAC string

// String is "[hmac]", or "" for none.
func (m MAC) String() string {
	if m == "" {
		return ""
	}
	return "[hmac]"
}

// Format prints String whatever the verb.
func (m MAC) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(m.String())) }

// open decrypts a secret file once per load, however many values are
// read from it.
func (p *provisionReader) open(name string, data []byte, keys *secrets.Keys, meta *secrets.Metadata) (*secrets.Document, string) {
	if r, ok := p.docs[name]; ok {
		return r.doc, r.msg
	}
	if keys == nil {
		return nil, fmt.Sprintf("cannot decrypt %q: no age key was given (--age-key-file or $BERTH_AGE_KEY_FILE); it is encrypted to %s", name, recipientList(meta))
	}
	doc, err := secrets.Open(name, data, keys)
	msg := ""
	if err != nil {
		msg = fmt.Sprintf("cannot decrypt %q with the age keys given (--age-key-file): %s", name, EscapeText(err.Error()))
		if who := strings.Join(meta.Recipients, ", "); who == "" || !strings.Contains(msg, who) {
			msg += "; it is encrypted to " + recipientList(meta)
		}
	}
	if p.docs == nil {
		p.docs = map[string]openedSecret{}
	}
	p.docs[name] = openedSecret{doc, msg}
	return doc, msg
}

func recipientList(meta *secrets.Metadata) string {
	if len(meta.Recipients) == 0 {
		return "no age recipient"
	}
	return strings.Join(meta.Recipients, ", ")
}

// salt asks for the owner's salt once per load.
func (p *provisionReader) salt(get func() ([]byte, error)) ([]byte, string) {
	if p.saltDone {
		return p.saltValue, p.saltMsg
	}
	p.saltDone = true
	if get == nil {
		p.saltMsg = "no secret salt was given"
		return nil, p.saltMsg
	}
	v, err := get()
	if err != nil {
		p.saltMsg = "cannot read the owner's secret salt: " + EscapeText(err.Error())
	}
	p.saltValue = v
	return v, p.saltMsg
}

type openedSecret struct {
	doc *secrets.Document
	msg string
}

// secretMounts checks, once the whole container is read, that no secret
// file's target is a volume's.
func (d *decoder) secretMounts() {
	for _, p := range d.secretTargets {
		t := p.node.Value
		if i, ok := d.mounts[path.Clean(t)]; ok {
			d.errorAt(p, "target %q is already mounted by volumes[%d]", t, i)
		}
	}
}

// isSOPSDocument reports whether root is a document SOPS wrote: a mapping
// with a top-level sops mapping and no kind. Its values are encrypted, its
// keys are not, and none of it is an App.
func isSOPSDocument(root *yaml.Node) bool {
	if root.Kind != yaml.MappingNode {
		return false
	}
	sops := false
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch k := root.Content[i]; {
		case k.Kind != yaml.ScalarNode:
		case k.Value == "kind" || k.Value == "apiVersion":
			return false
		case k.Value == "sops" && root.Content[i+1].Kind == yaml.MappingNode:
			sops = true
		}
	}
	return sops
}
