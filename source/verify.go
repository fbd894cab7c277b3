package source

import (
	"bytes"
	"fmt"
	"os"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Verifier checks OpenPGP commit signatures against a keyring of trusted
// public keys (--verify-signatures --keyring FILE).
type Verifier struct {
	keyring string // armored, as go-git's Commit.Verify wants it
	file    string
}

// NewVerifier reads an armored OpenPGP public keyring. It is parsed once
// here so that a broken keyring fails at start-up, not at the first commit.
func NewVerifier(keyringFile string) (*Verifier, error) {
	b, err := os.ReadFile(keyringFile)
	if err != nil {
		return nil, fmt.Errorf("read keyring: %w", err)
	}
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("keyring %s: %w", keyringFile, err)
	}
	if len(el) == 0 {
		return nil, fmt.Errorf("keyring %s holds no keys", keyringFile)
	}
	return &Verifier{keyring: string(b), file: keyringFile}, nil
}

// VerifyCommit returns nil when c carries a signature made by a key of the
// keyring.
func (v *Verifier) VerifyCommit(c *object.Commit) error {
	if c.PGPSignature == "" {
		return fmt.Errorf("commit %s is not signed", c.Hash)
	}
	if _, err := c.Verify(v.keyring); err != nil {
		return fmt.Errorf("commit %s: signature does not verify: %w", c.Hash, err)
	}
	return nil
}

// UnverifiedError is what Sync returns when the branch head is not signed
// by a trusted key. The caller keeps running its last verified revision.
type UnverifiedError struct {
	SHA    string
	Reason string
}

func (e *UnverifiedError) Error() string {
	return fmt.Sprintf("revision %s rejected: %s", shortSHA(e.SHA), e.Reason)
}

func shortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
