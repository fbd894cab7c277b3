package live

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
)

// saltLen is the salt's size in bytes: as long as HMAC-SHA256's output.
const saltLen = 32

// SecretSalt returns owner's secret salt, kept in LXD's server config
// under ownership.SaltKey beside the owner's lease, creating it on first
// use. Like everything berth keeps, it lives in LXD, so every berth of the
// owner (daemon, apply, plan) hashes a secret alike. It is never logged:
// with it, a short secret could be guessed from its HMAC in a label.
//
// A value that is not a salt is an error, not overwritten: a new salt
// changes every hash that covers a secret, and rolls those replicas.
func SecretSalt(ctx context.Context, c *lxd.Client, owner string) ([]byte, error) {
	key := ownership.SaltKey(owner, c.Project())
	for try := 1; ; try++ {
		srv, etag, err := c.GetServer(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the secret salt of owner %q: %w", owner, err)
		}
		if v, _ := srv.Config[key].(string); v != "" {
			salt, err := hex.DecodeString(v)
			if err != nil || len(salt) != saltLen {
				return nil, fmt.Errorf("LXD server config key %s is not a salt (%d hex digits): delete it to have berth make a new one; every replica with a secret then rolls once", key, 2*saltLen)
			}
			return salt, nil
		}
		salt := make([]byte, saltLen)
		if _, err := rand.Read(salt); err != nil {
			return nil, err
		}
		err = c.PatchServerConfig(ctx, map[string]any{key: hex.EncodeToString(salt)}, etag)
		switch {
		case errors.Is(err, lxd.ErrPreconditionFailed) && try < acquireTries:
			// Another owner's lease renewal, or another berth writing the
			// salt: read again, and use the salt that is there.
			continue
		case err != nil:
			return nil, fmt.Errorf("store the secret salt of owner %q: %w", owner, err)
		}
		// Read back: two first writers racing on one ETag may both have
		// passed LXD's check, and the value that stayed is the salt.
	}
}
