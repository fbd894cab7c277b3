package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
)

// SecretRoot is the tmpfs berth mounts in each instance for the secret
// files of its app container: their bytes never touch the instance's disk.
const SecretRoot = "/run/berth-secrets"

// SecretDir is the folder of the secret files of app's container with
// container hash hash: one per hash, so a replacement gets its own files
// beside those the old container still reads.
func SecretDir(app, hash string) string { return path.Join(SecretRoot, app, hash) }

// SecretSource is the file in the instance that is bind-mounted, read-only,
// at target in the app container. Its name is a hash of target, so that
// any target maps to one short, safe name.
func SecretSource(app, hash, target string) string {
	sum := sha256.Sum256([]byte(target))
	return path.Join(SecretDir(app, hash), hex.EncodeToString(sum[:8]))
}
