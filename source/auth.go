package source

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// PasswordEnv is the environment variable the CLI reads an HTTPS password
// or token from. Secrets never come from a flag value: flags show in `ps`
// and in shell history, files and the environment do not.
const PasswordEnv = "BERTH_GIT_PASSWORD"

// Auth holds the credentials for a remote. Secrets are named by file so
// that they never have to travel on a command line.
type Auth struct {
	// HTTPS. Username defaults to "git" when only a password or token is
	// given: forges ignore the name for tokens, but an empty one is
	// rejected by some of them.
	Username string
	// PasswordFile holds a password or token (trailing newline ignored).
	PasswordFile string
	// Password is for callers that have the secret in memory already (the
	// CLI fills it from $BERTH_GIT_PASSWORD, never from a flag). It wins
	// over PasswordFile; when both are empty $BERTH_GIT_PASSWORD is used.
	Password string

	// SSH: a private key (PEM or OpenSSH format) and optionally a file
	// with its passphrase. Without a key file the SSH agent is used when
	// $SSH_AUTH_SOCK is set.
	SSHKeyFile           string
	SSHKeyPassphraseFile string
	// KnownHostsFile is required for SSH: the pinned host keys. An
	// unknown host or a changed key is an error, never trusted on first
	// use, because a daemon that applies whatever it fetches must not be
	// talked into fetching from an impostor.
	KnownHostsFile string
}

// ErrNoKnownHosts is returned when an SSH remote is used without a
// known_hosts file.
var ErrNoKnownHosts = errors.New("SSH needs a known_hosts file with the server's pinned host key (berth never trusts an unknown host key)")

// Method builds the go-git AuthMethod for url. It returns nil, nil when
// the transport needs no credentials (file://, a local path, or HTTP(S)
// with no credentials configured).
func (a Auth) Method(url string) (transport.AuthMethod, error) {
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return nil, fmt.Errorf("parse remote URL: %w", err)
	}
	switch ep.Protocol {
	case "http", "https":
		return a.httpAuth()
	case "ssh":
		return a.sshAuth(ep)
	default:
		return nil, nil
	}
}

func (a Auth) password() (string, error) {
	if a.Password != "" {
		return a.Password, nil
	}
	if a.PasswordFile != "" {
		b, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", fmt.Errorf("password file %s is empty", a.PasswordFile)
		}
		return p, nil
	}
	return os.Getenv(PasswordEnv), nil
}

func (a Auth) httpAuth() (transport.AuthMethod, error) {
	pw, err := a.password()
	if err != nil {
		return nil, err
	}
	if pw == "" && a.Username == "" {
		return nil, nil // anonymous: a public repository
	}
	user := a.Username
	if user == "" {
		user = "git"
	}
	return &githttp.BasicAuth{Username: user, Password: pw}, nil
}

func (a Auth) sshAuth(ep *transport.Endpoint) (transport.AuthMethod, error) {
	if a.KnownHostsFile == "" {
		return nil, ErrNoKnownHosts
	}
	port := ep.Port
	if port == 0 {
		port = 22
	}
	hostPort := net.JoinHostPort(ep.Host, fmt.Sprint(port))
	cb, algos, err := HostKeyCallback(a.KnownHostsFile, hostPort)
	if err != nil {
		return nil, err
	}
	user := ep.User
	if user == "" {
		user = "git"
	}
	helper := gitssh.HostKeyCallbackHelper{HostKeyCallback: cb, HostKeyAlgorithms: algos}
	if a.SSHKeyFile == "" {
		if os.Getenv("SSH_AUTH_SOCK") == "" {
			return nil, errors.New("SSH needs a private key file (or a running ssh-agent)")
		}
		agent, err := gitssh.NewSSHAgentAuth(user)
		if err != nil {
			return nil, fmt.Errorf("ssh-agent: %w", err)
		}
		agent.HostKeyCallbackHelper = helper
		return agent, nil
	}
	passphrase := ""
	if a.SSHKeyPassphraseFile != "" {
		b, err := os.ReadFile(a.SSHKeyPassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("read SSH key passphrase file: %w", err)
		}
		passphrase = strings.TrimRight(string(b), "\r\n")
	}
	keys, err := gitssh.NewPublicKeysFromFile(user, a.SSHKeyFile, passphrase)
	if err != nil {
		return nil, fmt.Errorf("SSH key %s: %w", a.SSHKeyFile, err)
	}
	keys.HostKeyCallbackHelper = helper
	return keys, nil
}

// HostKeyCallback builds the host key check for one server (host:port)
// from a known_hosts file. It also returns the host key algorithms pinned
// for that server: without them the server may present a key of another
// type than the pinned one, which would look like a changed key.
//
// Errors are reworded so that the log says what happened: a changed key
// is a possible man in the middle and must be fixed by a person editing
// known_hosts; berth never re-trusts on its own.
func HostKeyCallback(knownHostsFile, hostPort string) (ssh.HostKeyCallback, []string, error) {
	if knownHostsFile == "" {
		return nil, nil, ErrNoKnownHosts
	}
	db, err := gitssh.NewKnownHostsDb(knownHostsFile)
	if err != nil {
		return nil, nil, fmt.Errorf("known_hosts %s: %w", knownHostsFile, err)
	}
	inner := db.HostKeyCallback()
	cb := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := inner(hostname, remote, key)
		if err == nil {
			return nil
		}
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			if len(ke.Want) > 0 {
				return fmt.Errorf("host key for %s changed: server presented %s %s, %s pins another key (line %d); if the change is expected, fix known_hosts by hand",
					hostname, key.Type(), ssh.FingerprintSHA256(key), knownHostsFile, ke.Want[0].Line)
			}
			return fmt.Errorf("host %s is not in %s (server key %s %s); add it after checking the fingerprint",
				hostname, knownHostsFile, key.Type(), ssh.FingerprintSHA256(key))
		}
		var re *knownhosts.RevokedError
		if errors.As(err, &re) {
			return fmt.Errorf("host key for %s is revoked in %s", hostname, knownHostsFile)
		}
		return fmt.Errorf("host key for %s: %w", hostname, err)
	}
	return cb, db.HostKeyAlgorithms(hostPort), nil
}
