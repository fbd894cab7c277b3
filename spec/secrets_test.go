package spec

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"filippo.io/age"

	"github.com/berth-gitops/berth/secrets"
)

const (
	dbPassword   = "s3cr3t-db-passw0rd"
	secretsPlain = "db:\n  password: " + dbPassword + "\n  user: app\n"
	plainFile    = "db:\n  password: " + dbPassword + "\n"
	withSecrets  = "  container:\n    image: nginx\n    secretFiles:\n"
	secretsSpec  = "apiVersion: berth/v1\nkind: App\nmetadata:\n  name: web\nspec:\n  system:\n    image: debian\n" + withSecrets
	secretsFirst = 11 // line of the first secretFiles item
)

// The test keys: secretsFile is encrypted to oldKey, newKey opens nothing.
var oldKey, newKey = mustIdentity(), mustIdentity()

var secretsFile = sealed(secretsPlain)

func mustIdentity() *age.X25519Identity {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		panic(err)
	}
	return id
}

// sealed is plain encrypted to oldKey in SOPS's format; each call draws a
// new data key, as a fresh `sops --encrypt` does.
func sealed(plain string) string {
	out, err := secrets.Encrypt("web.enc.yaml", []byte(plain), []string{oldKey.Recipient().String()})
	if err != nil {
		panic(err)
	}
	return string(out)
}

// old is oldKey's recipient, for messages that name it.
func old() string { return oldKey.Recipient().String() }

func secretRepo() fstest.MapFS {
	files := repoFiles()
	files["secrets/web.enc.yaml"] = &fstest.MapFile{Data: []byte(secretsFile)}
	files["secrets/plain.yaml"] = &fstest.MapFile{Data: []byte(plainFile)}
	files["secrets/big.enc.yaml"] = &fstest.MapFile{Data: []byte(strings.Repeat("#", MaxSecretFileSize+1))}
	return files
}

// testKeys writes id's key file and loads it.
func testKeys(t *testing.T, id *age.X25519Identity) *secrets.Keys {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.txt")
	if err := os.WriteFile(p, []byte("# public key: "+id.Recipient().String()+"\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := secrets.LoadKeys(p)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// validate checks every reference without decrypting, each problem at
// its field, naming the file; a plaintext file's content is never shown.
func TestSecretFileRules(t *testing.T) {
	item := func(f string) string { return secretsSpec + "      - " + f + "\n" }
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"one value", item("{file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/db_password}"), nil},
		{"whole document", item("{file: secrets/web.enc.yaml, target: /run/secrets/all.yaml, mode: \"0440\", owner: \"65534:65534\"}"), nil},
		{"missing file", item("{file: secrets/nope.enc.yaml, key: db.password, target: /run/secrets/x}"),
			[]string{`app.yaml:11:16: spec.container.secretFiles[0].file: no file "secrets/nope.enc.yaml" in the repository at this revision`}},
		{"plaintext file", item("{file: secrets/plain.yaml, key: db.password, target: /run/secrets/x}"),
			[]string{`app.yaml:11:16: spec.container.secretFiles[0].file: "secrets/plain.yaml" is not a SOPS-encrypted file (no readable sops metadata): encrypt it with sops before it is committed, and make sure it was not committed in the clear`}},
		{"missing key", item("{file: secrets/web.enc.yaml, key: db.pasword, target: /run/secrets/x}"),
			[]string{`app.yaml:11:43: spec.container.secretFiles[0].key: "secrets/web.enc.yaml" has no key "db.pasword" (its keys are dotted paths like db.password)`}},
		{"empty key part", item("{file: secrets/web.enc.yaml, key: db..password, target: /run/secrets/x}"),
			[]string{`app.yaml:11:43: spec.container.secretFiles[0].key: must be a dotted key path like db.password, without empty parts: "db..password"`}},
		{"relative target", item("{file: secrets/web.enc.yaml, target: run/secrets/x}"),
			[]string{`app.yaml:11:46: spec.container.secretFiles[0].target: must be an absolute path in the app container, got "run/secrets/x"`}},
		{"unclean target", item("{file: secrets/web.enc.yaml, target: /run/secrets/../x}"),
			[]string{`app.yaml:11:46: spec.container.secretFiles[0].target: must be a clean path (no "//", "." or ".." parts, no trailing "/"): "/run/secrets/../x", maybe "/run/x"`}},
		{"missing target", item("{file: secrets/web.enc.yaml}"),
			[]string{`app.yaml:11:9: spec.container.secretFiles[0].target: required field is missing`}},
		{"same target twice", item("{file: secrets/web.enc.yaml, key: db.user, target: /run/secrets/x}") + "      - {file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/x}\n",
			[]string{`app.yaml:12:64: spec.container.secretFiles[1].target: target "/run/secrets/x" is already written by secretFiles[0]`}},
		{"target a volume mounts", item("{file: secrets/web.enc.yaml, target: /data}") + "    volumes: [{source: /srv, target: /data}]\n",
			[]string{`app.yaml:11:46: spec.container.secretFiles[0].target: target "/data" is already mounted by volumes[0]`}},
		{"bad mode", item("{file: secrets/web.enc.yaml, target: /run/secrets/x, mode: \"0999\"}"),
			[]string{`app.yaml:11:68: spec.container.secretFiles[0].mode: mode must be an octal permission string like "0644" or "0755" (at most "0777"), got "0999"`}},
		{"owner by name", item("{file: secrets/web.enc.yaml, target: /run/secrets/x, owner: nobody}"),
			[]string{`app.yaml:11:69: spec.container.secretFiles[0].owner: owner must be numeric "uid:gid" like "0:0" or "1000:1000", got "nobody"`}},
		{"file out of the repository", item("{file: ../secrets/web.enc.yaml, target: /run/secrets/x}"),
			[]string{`app.yaml:11:16: spec.container.secretFiles[0].file: must not have ".." parts: provision files are read from inside the repository, got "../secrets/web.enc.yaml"`}},
		{"too large", item("{file: secrets/big.enc.yaml, target: /run/secrets/x}"),
			[]string{`app.yaml:11:16: spec.container.secretFiles[0].file: secret "secrets/big.enc.yaml" is too large: 1048577 bytes, an encrypted secret file may have at most 1024 KiB`}},
		{"unknown field", item("{file: secrets/web.enc.yaml, target: /run/secrets/x, value: hunter2}"),
			[]string{`app.yaml:11:62: spec.container.secretFiles[0].value: unknown field "value"; allowed: file, key, target, mode, owner`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := loadWithFiles(t, tt.src, secretRepo(), Options{})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), tt.want)
			if len(tt.want) > 0 && !slices.Equal(r.InvalidApps, []string{"web"}) {
				t.Errorf("InvalidApps = %v, want [web]", r.InvalidApps)
			}
			for _, d := range r.Diagnostics {
				if strings.Contains(d.String(), dbPassword) {
					t.Errorf("a diagnostic shows the secret: %s", d)
				}
			}
		})
	}
}

func TestSecretFileDefaults(t *testing.T) {
	r := loadWithFiles(t, secretsSpec+"      - {file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/db_password}\n", secretRepo(), Options{})
	if len(r.Diagnostics) > 0 {
		t.Fatal(r.Diagnostics)
	}
	got := r.Apps[0].Spec.Container.SecretFiles
	want := []SecretFile{{File: "secrets/web.enc.yaml", Key: "db.password", Target: "/run/secrets/db_password", Mode: "0400", Owner: "0:0"}}
	if fmt.Sprint(got) != fmt.Sprint(want) || got[0].Value.Len() != 0 || got[0].MAC != "" {
		t.Errorf("secret files = %+v, want %+v, nothing decrypted without keys", got, want)
	}
}

// With keys, the value is decrypted in memory and enters the hash only
// through its HMAC under the owner's salt.
func TestSecretFileOpened(t *testing.T) {
	src := secretsSpec + "      - {file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/db_password}\n"
	salt := []byte("0123456789abcdef0123456789abcdef")
	opts := Options{Secrets: &SecretKeys{Keys: testKeys(t, oldKey), Salt: func() ([]byte, error) { return salt, nil }}}
	r := loadWithFiles(t, src, secretRepo(), opts)
	if len(r.Diagnostics) > 0 {
		t.Fatal(r.Diagnostics)
	}
	c := r.Apps[0].Spec.Container
	sf := c.SecretFiles[0]
	if string(sf.Value.Reveal()) != dbPassword {
		t.Errorf("value = %q, want the decrypted password", sf.Value.Reveal())
	}
	m := hmac.New(sha256.New, salt)
	m.Write([]byte(dbPassword))
	if string(sf.MAC) != hex.EncodeToString(m.Sum(nil)) {
		t.Errorf("MAC = %s, want HMAC-SHA256(salt, value)", sf.MAC)
	}

	// Nothing that formats the app shows the value or its MAC.
	j, _ := json.Marshal(r.Apps[0])
	for _, out := range []string{fmt.Sprintf("%v %+v %#v", r.Apps[0], r.Apps[0], r.Apps[0]), string(j)} {
		if strings.Contains(out, dbPassword) || strings.Contains(out, string(sf.MAC)) {
			t.Errorf("formatting the app shows the secret or its MAC: %s", out)
		}
	}

	// A new value changes the container hash; a re-encryption (the same
	// value, another file) does not; another salt gives another hash.
	h := c.Hash()
	files := secretRepo()
	files["secrets/web.enc.yaml"] = &fstest.MapFile{Data: []byte(sealed(secretsPlain))}
	if got := loadWithFiles(t, src, files, opts).Apps[0].Spec.Container.Hash(); got != h {
		t.Errorf("re-encrypting the same value changed the container hash: %s -> %s", h, got)
	}
	files["secrets/web.enc.yaml"] = &fstest.MapFile{Data: []byte(sealed(strings.Replace(secretsPlain, dbPassword, "rotated", 1)))}
	if got := loadWithFiles(t, src, files, opts).Apps[0].Spec.Container.Hash(); got == h {
		t.Error("a new secret value left the container hash unchanged: the replicas would keep the old one")
	}
	other := Options{Secrets: &SecretKeys{Keys: opts.Secrets.Keys, Salt: func() ([]byte, error) { return []byte("another salt"), nil }}}
	if got := loadWithFiles(t, src, secretRepo(), other).Apps[0].Spec.Container.Hash(); got == h {
		t.Error("the hash does not depend on the salt: it would be a plain hash of the value")
	}
}

// A secret no key opens holds its app alone, naming the file and its
// recipients.
func TestSecretFileNoKeyOpens(t *testing.T) {
	src := secretsSpec + "      - {file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/db_password}\n" +
		"---\napiVersion: berth/v1\nkind: App\nmetadata:\n  name: other\nspec:\n  system:\n    image: debian\n"
	opts := Options{Secrets: &SecretKeys{Keys: testKeys(t, newKey), Salt: func() ([]byte, error) { return []byte("salt"), nil }}}
	r := loadWithFiles(t, src, secretRepo(), opts)
	got := diagStrings(r.Diagnostics)
	for _, want := range []string{`app.yaml:11:16: spec.container.secretFiles[0].file: cannot decrypt "secrets/web.enc.yaml" with the age keys given (--age-key-file): secrets/web.enc.yaml: no age key opens it: it is encrypted to ` + old(),
		"are for " + newKey.Recipient().String()} {
		if len(got) != 1 || !strings.Contains(got[0], want) {
			t.Errorf("diagnostics %q; want one saying %q", got, want)
		}
	}
	if !slices.Equal(r.InvalidApps, []string{"web"}) || len(r.Apps) != 1 || r.Apps[0].Metadata.Name != "other" {
		t.Errorf("InvalidApps = %v, apps = %d: want web held and other loaded", r.InvalidApps, len(r.Apps))
	}
}

func TestSecretProvisionFile(t *testing.T) {
	files := secretRepo()
	src := plain("    provision:\n      files: [{source: secrets/web.enc.yaml, path: /run/app/secrets.yaml, secret: true}]\n")
	r := loadWithFiles(t, src, files, Options{})
	if len(r.Diagnostics) > 0 {
		t.Fatal(r.Diagnostics)
	}
	if f := r.Apps[0].Spec.System.Provision.Files[0]; f.Mode != "0400" || !f.Secret {
		t.Errorf("secret provision file = mode %s secret %v, want mode 0400 by default", f.Mode, f.Secret)
	}
	bad := plain("    provision:\n      files: [{secret: true, source: secrets/plain.yaml, path: /run/app/x}]\n")
	r = loadWithFiles(t, bad, files, Options{})
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{
		`app.yaml:9:38: spec.system.provision.files[0].source: "secrets/plain.yaml" is not a SOPS-encrypted file (no readable sops metadata): encrypt it with sops before it is committed, and make sure it was not committed in the clear`,
	})

	salt := []byte("salt")
	opts := Options{Secrets: &SecretKeys{Keys: testKeys(t, oldKey), Salt: func() ([]byte, error) { return salt, nil }}}
	p := loadWithFiles(t, src, files, opts).Apps[0].Spec.System.Provision
	if !strings.Contains(string(p.Files[0].Value.Reveal()), dbPassword) {
		t.Errorf("the secret provision file was not decrypted: %d bytes", p.Files[0].Value.Len())
	}
	h := p.Hash()
	files["secrets/web.enc.yaml"] = &fstest.MapFile{Data: []byte(sealed(secretsPlain))}
	if got := loadWithFiles(t, src, files, opts).Apps[0].Spec.System.Provision.Hash(); got != h {
		t.Errorf("re-encrypting the same document re-runs the provision: %s -> %s", h, got)
	}
	files["secrets/web.enc.yaml"] = &fstest.MapFile{Data: []byte(sealed(strings.Replace(secretsPlain, dbPassword, "rotated", 1)))}
	if got := loadWithFiles(t, src, files, opts).Apps[0].Spec.System.Provision.Hash(); got == h {
		t.Error("a new secret left the provision hash unchanged")
	}
}

// Without a key, or without the owner's salt, a live load holds the app
// rather than apply a secret it could not open.
func TestSecretFileNotOpenable(t *testing.T) {
	src := secretsSpec + "      - {file: secrets/web.enc.yaml, key: db.password, target: /run/secrets/db_password}\n"
	tests := []struct {
		name string
		keys *SecretKeys
		want string
	}{
		{"no key given", &SecretKeys{Salt: func() ([]byte, error) { return []byte("salt"), nil }},
			`app.yaml:11:16: spec.container.secretFiles[0].file: cannot decrypt "secrets/web.enc.yaml": no age key was given (--age-key-file or $BERTH_AGE_KEY_FILE); it is encrypted to ` + old()},
		{"salt unreadable", &SecretKeys{Keys: testKeys(t, oldKey), Salt: func() ([]byte, error) { return nil, fmt.Errorf("connect to LXD: refused") }},
			`app.yaml:11:16: spec.container.secretFiles[0].file: "secrets/web.enc.yaml" not opened: cannot read the owner's secret salt: connect to LXD: refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := loadWithFiles(t, src, secretRepo(), Options{Secrets: tt.keys})
			sameLines(t, "diagnostics", diagStrings(r.Diagnostics), []string{tt.want})
			if !slices.Equal(r.InvalidApps, []string{"web"}) {
				t.Errorf("InvalidApps = %v, want [web]", r.InvalidApps)
			}
		})
	}
}

// A SOPS file beside the specs, as Flux repositories keep them, is not an
// App; a document with a kind is one, whatever else it holds.
func TestSOPSFilesAreNotSpecs(t *testing.T) {
	files := secretRepo()
	files["specs/web.enc.yaml"] = &fstest.MapFile{Data: []byte(secretsFile)}
	files["specs/odd.yaml"] = &fstest.MapFile{Data: []byte("kind: App\nsops: {}\n")}
	r := loadWithFiles(t, secretsSpec+"      - {file: specs/web.enc.yaml, target: /run/secrets/all}\n", files, Options{})
	want := []string{
		"odd.yaml:1:1: apiVersion: required field is missing",
		"odd.yaml:1:1: metadata: required field is missing",
		"odd.yaml:1:1: spec: required field is missing",
		`odd.yaml:2:1: sops: unknown field "sops"; allowed: apiVersion, kind, metadata, spec`,
	}
	sameLines(t, "diagnostics", diagStrings(r.Diagnostics), want)
	if len(r.Apps) != 1 || len(r.Unidentified) != 1 || r.Unidentified[0] != "odd.yaml" {
		t.Errorf("apps %d, unidentified %v: want web, and odd.yaml unidentified", len(r.Apps), r.Unidentified)
	}
}
