package main

import (
	"context"
	"sync"

	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/secrets"
	"github.com/berth-gitops/berth/spec"
)

// secretKeys are what plan, apply and run open secrets with: the age keys
// of --age-key-file, and the owner's salt, read from LXD (and made there
// on first use) only when a spec references a secret. validate and diff
// never open one: they leave spec.Options.Secrets nil.
//
// With no key file, every app with a secret is held, named with its
// file's recipients: applying a secret berth could not read would put an
// empty file in its place.
func (g *globalOptions) secretKeys(ctx context.Context, client func(context.Context) (*lxd.Client, error)) (*spec.SecretKeys, error) {
	var keys *secrets.Keys
	if len(g.ageKeyFiles) > 0 {
		var err error
		if keys, err = secrets.LoadKeys(g.ageKeyFiles...); err != nil {
			return nil, err
		}
	}
	var (
		mu   sync.Mutex
		salt []byte
	)
	return &spec.SecretKeys{Keys: keys, Salt: func() ([]byte, error) {
		// Once read, the salt is kept: berth never changes it. A failure
		// is not kept, so the next load tries again.
		mu.Lock()
		defer mu.Unlock()
		if salt != nil {
			return salt, nil
		}
		c, err := client(ctx)
		if err != nil {
			return nil, err
		}
		s, err := live.SecretSalt(ctx, c, g.owner)
		if err == nil {
			salt = s
		}
		return s, err
	}}, nil
}
