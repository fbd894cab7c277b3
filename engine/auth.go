package engine

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/registry"
)

// dockerConfig is the part of a Docker CLI config.json berth reads.
type dockerConfig struct {
	Auths       map[string]authEntry `json:"auths"`
	CredsStore  string               `json:"credsStore,omitempty"`
	CredHelpers map[string]string    `json:"credHelpers,omitempty"`
}

type authEntry struct {
	Auth          string `json:"auth,omitempty"` // base64("user:password")
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	RegistryToken string `json:"registrytoken,omitempty"`
}

// dockerHubKeys are the spellings config.json uses for Docker Hub; `docker
// login` writes the first.
var dockerHubKeys = []string{"https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io"}

// registryAuth returns the X-Registry-Auth value for pulling image, or ""
// when file is empty or has no entry for the image's registry. Errors never
// contain credentials.
func registryAuth(file, image string) (string, error) {
	if file == "" {
		return "", nil
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", image, err)
	}
	host := reference.Domain(named)
	data, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("registry auth file: %w", err)
	}
	ac, ok, err := lookupAuth(data, host)
	if err != nil {
		return "", fmt.Errorf("registry auth file %s: %w", file, err)
	}
	if !ok {
		return "", nil
	}
	enc, err := registry.EncodeAuthConfig(ac)
	if err != nil {
		return "", fmt.Errorf("registry auth for %s: cannot encode", host)
	}
	return enc, nil
}

// lookupAuth finds the credentials for registry host in a config.json.
// Keys may be bare hosts ("reg:5000") or URLs ("https://reg/v1/"), as
// `docker login` writes them over the years. Credential helpers
// (credsStore, credHelpers) are not run: berth reads a file, it does not
// execute programs; an entry only available through a helper is an error,
// so a pull does not fail later with a puzzling "unauthorized".
func lookupAuth(data []byte, host string) (registry.AuthConfig, bool, error) {
	var cfg dockerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		// json errors quote at most a type and offset, never the content.
		return registry.AuthConfig{}, false, fmt.Errorf("not a docker config.json: %w", err)
	}
	keys := []string{host}
	if host == "docker.io" {
		keys = dockerHubKeys
	}
	for k, e := range cfg.Auths {
		for _, want := range keys {
			if registryHost(k) != registryHost(want) {
				continue
			}
			ac, err := e.config(host)
			if err != nil {
				return registry.AuthConfig{}, false, fmt.Errorf("auths[%q]: %w", k, err)
			}
			return ac, true, nil
		}
	}
	if h, ok := cfg.CredHelpers[host]; ok {
		return registry.AuthConfig{}, false, fmt.Errorf("credentials for %s are in credential helper %q, which berth does not run; put them in \"auths\"", host, h)
	}
	return registry.AuthConfig{}, false, nil
}

func (e authEntry) config(host string) (registry.AuthConfig, error) {
	ac := registry.AuthConfig{
		Username:      e.Username,
		Password:      e.Password,
		IdentityToken: e.IdentityToken,
		RegistryToken: e.RegistryToken,
		ServerAddress: host,
	}
	if e.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(e.Auth))
		if err != nil {
			return ac, errors.New(`"auth" is not base64`)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok || user == "" {
			return ac, errors.New(`"auth" is not base64 of "user:password"`)
		}
		ac.Username, ac.Password = user, pass
	}
	if ac.Username == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return ac, errors.New("entry has no credentials")
	}
	return ac, nil
}

// registryHost reduces a config.json key to host[:port].
func registryHost(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	if i := strings.IndexByte(k, '/'); i >= 0 {
		k = k[:i]
	}
	return strings.ToLower(k)
}
