package server

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// basicAuth checks HTTP basic credentials against a file of lines
// "user:<bcrypt hash>", as `htpasswd -nbB user password` writes them.
// Only bcrypt is accepted: a plain or weakly hashed password in a file is
// refused when the file is read.
type basicAuth struct {
	users map[string][]byte
	// dummy is checked for unknown users, so a wrong user name costs the
	// same time as a wrong password and names cannot be probed.
	dummy []byte

	// verified remembers, per user, the SHA-256 of the password bcrypt
	// last accepted: a page's event stream and assets would otherwise cost
	// a bcrypt each. It lives in memory only.
	mu       sync.Mutex
	verified map[string][sha256.Size]byte
}

func loadBasicAuth(path string) (*basicAuth, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server: reading basic-auth file: %w", err)
	}
	a := &basicAuth{users: map[string][]byte{}, verified: map[string][sha256.Size]byte{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || user == "":
			return nil, fmt.Errorf("server: basic-auth file %s:%d: want user:<bcrypt hash>", path, n)
		case a.users[user] != nil:
			return nil, fmt.Errorf("server: basic-auth file %s:%d: user %q appears twice", path, n, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("server: basic-auth file %s:%d: the password of %q is not a bcrypt hash ($2y$...): make one with `htpasswd -nbB %s PASSWORD`", path, n, user, user)
		}
		a.users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("server: basic-auth file %s: %w", path, err)
	}
	if len(a.users) == 0 {
		return nil, fmt.Errorf("server: basic-auth file %s has no user", path)
	}
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	if a.dummy, err = bcrypt.GenerateFromPassword(secret, bcrypt.DefaultCost); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return a, nil
}

// check reports whether user and password match the file.
func (a *basicAuth) check(user, password string) bool {
	hash, known := a.users[user]
	if !known {
		_ = bcrypt.CompareHashAndPassword(a.dummy, []byte(password))
		return false
	}
	sum := sha256.Sum256([]byte(password))
	a.mu.Lock()
	last, seen := a.verified[user]
	a.mu.Unlock()
	if seen && subtle.ConstantTimeCompare(last[:], sum[:]) == 1 {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return false
	}
	a.mu.Lock()
	a.verified[user] = sum
	a.mu.Unlock()
	return true
}

var errNoCredentials = errors.New("credentials required")

// protect lets a request through when no basic-auth file is configured,
// or when it carries a user of the file or, for scripts, the sync token
// as a bearer token. Others get 401 with a Basic challenge, so a browser
// asks for a user and password.
func (s *Server) protect(next http.Handler) http.Handler {
	if s.basic == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="berth", charset="UTF-8"`)
		writeText(w, http.StatusUnauthorized, errNoCredentials.Error())
	})
}

func (s *Server) authorized(r *http.Request) bool {
	if user, password, ok := r.BasicAuth(); ok {
		return s.basic.check(user, password)
	}
	return s.token != nil && s.validBearer(r.Header.Get("Authorization"))
}
