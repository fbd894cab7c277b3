package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// newTestKey makes an Ed25519 OpenPGP key: quick to generate, unlike RSA.
func newTestKey(t *testing.T) *openpgp.Entity {
	t.Helper()
	e, err := openpgp.NewEntity("Release Bot", "", "bot@example.org",
		&packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// writeKeyring exports the public keys, armored, as `gpg --export -a` does.
func writeKeyring(t *testing.T, keys ...*openpgp.Entity) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keyring.asc")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w, err := armor.Encode(f, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := k.Serialize(w); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func testVerifier(t *testing.T, keys ...*openpgp.Entity) *Verifier {
	t.Helper()
	v, err := NewVerifier(writeKeyring(t, keys...))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// commitWith commits the work tree of g with go-git, signed by key when
// key is not nil.
func (g *gitRepo) commitWith(key *openpgp.Entity, msg string) string {
	g.t.Helper()
	r := gitOpen(g.t, g.dir)
	wt, err := r.Worktree()
	if err != nil {
		g.t.Fatal(err)
	}
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		g.t.Fatal(err)
	}
	sig := &object.Signature{Name: "Ada", Email: "ada@example.org", When: time.Now()}
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, SignKey: key})
	if err != nil {
		g.t.Fatal(err)
	}
	return h.String()
}

func TestVerifyCommit(t *testing.T) {
	trusted, stranger := newTestKey(t), newTestKey(t)
	v := testVerifier(t, trusted)
	g := newGitRepo(t)
	r := gitOpen(t, g.dir)
	check := func(key *openpgp.Entity, want string) {
		t.Helper()
		g.write("web.yaml", time.Now().String())
		sha := g.commitWith(key, "commit")
		c, err := r.CommitObject(plumbing.NewHash(sha))
		if err != nil {
			t.Fatal(err)
		}
		err = v.VerifyCommit(c)
		if want == "" {
			if err != nil {
				t.Fatalf("signed by trusted key: %v", err)
			}
			return
		}
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), sha) {
			t.Fatalf("err = %v, want %q", err, want)
		}
	}
	check(trusted, "")
	check(nil, "is not signed")
	check(stranger, "signature does not verify")
}

func TestNewVerifierErrors(t *testing.T) {
	if _, err := NewVerifier(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing keyring accepted")
	}
	p := filepath.Join(t.TempDir(), "junk.asc")
	if err := os.WriteFile(p, []byte("not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewVerifier(p); err == nil {
		t.Error("junk keyring accepted")
	}
}

func TestGitSourceVerifiesHead(t *testing.T) {
	trusted, stranger := newTestKey(t), newTestKey(t)
	g, bare := remotePair(t)
	g.write("apps/web.yaml", "signed\n")
	good := g.commitWith(trusted, "signed")
	g.push("main")
	s, err := NewGitSource(GitOptions{URL: "file://" + bare, CacheDir: t.TempDir(),
		Verify: testVerifier(t, trusted)})
	if err != nil {
		t.Fatal(err)
	}
	if snap := mustSync(t, s, true); snap.Commit.SHA != good {
		t.Fatalf("signed head: %s", snap.Commit.SHA)
	}
	for i, key := range []*openpgp.Entity{nil, stranger} {
		g.write("apps/web.yaml", fmt.Sprintf("evil %d\n", i))
		bad := g.commitWith(key, "unsigned or foreign")
		g.push("main")
		snap, _, err := s.Sync(context.Background())
		var ue *UnverifiedError
		if !errors.As(err, &ue) || ue.SHA != bad || snap.FS != nil {
			t.Fatalf("Sync = %+v, %v; want UnverifiedError for %s", snap.Commit, err, bad)
		}
	}
	// Signed again: accepted again.
	g.write("apps/web.yaml", "fixed\n")
	fixed := g.commitWith(trusted, "fixed")
	g.push("main")
	if snap := mustSync(t, s, true); snap.Commit.SHA != fixed || readAll(t, snap.FS)["apps/web.yaml"] != "fixed\n" {
		t.Fatalf("fixed head: %s", snap.Commit.SHA)
	}
}
