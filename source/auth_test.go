package source

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAuthHTTP(t *testing.T) {
	t.Setenv(PasswordEnv, "")
	pw := writeFile(t, "pw", "from-file\n")
	for _, tc := range []struct {
		name     string
		auth     Auth
		env      string
		user, pw string // "" user: no auth at all
	}{
		{"anonymous", Auth{}, "", "", ""},
		{"file", Auth{Username: "ci", PasswordFile: pw}, "", "ci", "from-file"},
		{"field wins over file", Auth{Username: "ci", Password: "mem", PasswordFile: pw}, "", "ci", "mem"},
		{"token from env, default user", Auth{}, "tok", "git", "tok"},
		{"file wins over env", Auth{PasswordFile: pw}, "tok", "git", "from-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(PasswordEnv, tc.env)
			m, err := tc.auth.Method("https://git.example.org/config.git")
			if err != nil {
				t.Fatal(err)
			}
			if tc.user == "" {
				if m != nil {
					t.Fatalf("auth = %v, want none", m)
				}
				return
			}
			b, ok := m.(*githttp.BasicAuth)
			if !ok || b.Username != tc.user || b.Password != tc.pw {
				t.Fatalf("auth = %#v, want %s:%s", m, tc.user, tc.pw)
			}
		})
	}
	if _, err := (Auth{PasswordFile: filepath.Join(t.TempDir(), "none")}).Method("https://x/y"); err == nil {
		t.Error("missing password file accepted")
	}
	if m, err := (Auth{Username: "u", Password: "p"}).Method("file:///srv/x.git"); m != nil || err != nil {
		t.Errorf("file:// auth = %v, %v; want none", m, err)
	}
}

// hostKey makes an SSH host key pair.
func hostKey(t *testing.T) (ssh.Signer, ed25519.PrivateKey) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, priv
}

func knownHostsFile(t *testing.T, host string, key ssh.PublicKey) string {
	t.Helper()
	return writeFile(t, "known_hosts", knownhosts.Line([]string{host}, key)+"\n")
}

func TestHostKeyCallback(t *testing.T) {
	pinned, _ := hostKey(t)
	other, _ := hostKey(t)
	kh := knownHostsFile(t, "git.example.org:22", pinned.PublicKey())
	cb, algos, err := HostKeyCallback(kh, "git.example.org:22")
	if err != nil {
		t.Fatal(err)
	}
	if len(algos) != 1 || algos[0] != ssh.KeyAlgoED25519 {
		t.Errorf("host key algorithms = %v", algos)
	}
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 22}
	if err := cb("git.example.org:22", addr, pinned.PublicKey()); err != nil {
		t.Errorf("pinned key rejected: %v", err)
	}
	err = cb("git.example.org:22", addr, other.PublicKey())
	if err == nil || !strings.Contains(err.Error(), "host key for git.example.org:22 changed") {
		t.Errorf("changed key: %v", err)
	}
	err = cb("elsewhere.example.org:22", addr, pinned.PublicKey())
	if err == nil || !strings.Contains(err.Error(), "elsewhere.example.org:22 is not in") {
		t.Errorf("unknown host: %v", err)
	}
	if _, _, err := HostKeyCallback("", "x:22"); !errors.Is(err, ErrNoKnownHosts) {
		t.Errorf("no known_hosts: %v", err)
	}
}

func TestAuthSSH(t *testing.T) {
	pinned, _ := hostKey(t)
	kh := knownHostsFile(t, "[git.example.org]:2222", pinned.PublicKey())
	_, clientKey := hostKey(t)
	block, err := ssh.MarshalPrivateKey(clientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeFile(t, "id_ed25519", string(pem.EncodeToMemory(block)))
	// The passphrase is checked once only: its key derivation is slow.
	block, err = ssh.MarshalPrivateKeyWithPassphrase(clientKey, "", []byte("open sesame"))
	if err != nil {
		t.Fatal(err)
	}
	encKeyFile := writeFile(t, "id_enc", string(pem.EncodeToMemory(block)))
	pass := writeFile(t, "pass", "open sesame\n")
	url := "ssh://deploy@git.example.org:2222/config.git"
	if _, err := (Auth{SSHKeyFile: encKeyFile, SSHKeyPassphraseFile: pass, KnownHostsFile: knownHostsFile(t, "x", pinnedKey(t))}).Method(url); err != nil {
		t.Errorf("encrypted key with its passphrase: %v", err)
	}

	if _, err := (Auth{SSHKeyFile: keyFile, SSHKeyPassphraseFile: pass}).Method(url); !errors.Is(err, ErrNoKnownHosts) {
		t.Fatalf("without known_hosts: %v", err)
	}
	m, err := (Auth{SSHKeyFile: keyFile, KnownHostsFile: kh}).Method(url)
	if err != nil {
		t.Fatal(err)
	}
	pk, ok := m.(*gitssh.PublicKeys)
	if !ok || pk.User != "deploy" {
		t.Fatalf("auth = %#v", m)
	}
	cfg, err := pk.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.HostKeyAlgorithms) != 1 || cfg.HostKeyAlgorithms[0] != ssh.KeyAlgoED25519 {
		t.Errorf("host key algorithms = %v", cfg.HostKeyAlgorithms)
	}
	other, _ := hostKey(t)
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 2222}
	if err := cfg.HostKeyCallback("git.example.org:2222", addr, other.PublicKey()); err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("changed key accepted by the client config: %v", err)
	}
	if err := cfg.HostKeyCallback("git.example.org:2222", addr, pinned.PublicKey()); err != nil {
		t.Errorf("pinned key: %v", err)
	}

	// scp-like address: user from the address, port 22.
	kh22 := knownHostsFile(t, "git.example.org", pinned.PublicKey())
	m, err = (Auth{SSHKeyFile: keyFile, KnownHostsFile: kh22}).Method("git@git.example.org:team/config.git")
	if err != nil {
		t.Fatal(err)
	}
	if pk := m.(*gitssh.PublicKeys); pk.User != "git" || len(pk.HostKeyAlgorithms) != 1 {
		t.Errorf("scp-like: user %q, algos %v", pk.User, pk.HostKeyAlgorithms)
	}

	t.Setenv("SSH_AUTH_SOCK", "")
	if _, err := (Auth{KnownHostsFile: kh}).Method(url); err == nil || !strings.Contains(err.Error(), "private key") {
		t.Errorf("no key: %v", err)
	}
}

func pinnedKey(t *testing.T) ssh.PublicKey {
	s, _ := hostKey(t)
	return s.PublicKey()
}
