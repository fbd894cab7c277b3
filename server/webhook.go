package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// provider describes how one Git host signs and labels its deliveries.
type provider struct {
	name string
	// headerAuth: the secret travels in a header, so the request can be
	// refused before its body is read.
	headerAuth bool
	// verify reports whether the delivery was sent by someone holding the
	// secret. body is nil when headerAuth is set.
	verify func(h http.Header, body, secret []byte) bool
	// parse classifies a verified delivery.
	parse func(h http.Header, body []byte) (delivery, error)
}

// eventKind is what berth makes of a delivery.
type eventKind int

const (
	eventOther eventKind = iota // acknowledged and ignored
	eventPing                   // the host checks the hook is set up
	eventPush
)

type delivery struct {
	kind  eventKind
	event string // the host's own event name, for messages
	ref   string // push: the ref pushed, refs/heads/<branch>
	after string // push: the new head, for the log
	id    string // the host's delivery id, for the log
	// eventName is GitLab's event_name from the payload; system hooks
	// tell pushes from other events by it.
	eventName string
}

// pushPayload holds the fields berth reads; GitHub, GitLab and Gitea use
// the same names for them.
type pushPayload struct {
	Ref       string `json:"ref"`
	After     string `json:"after"`
	EventName string `json:"event_name"` // GitLab system hooks
}

var providers = []provider{
	{name: "github", verify: verifyGitHub, parse: parseGitHub},
	{name: "gitlab", headerAuth: true, verify: verifyGitLab, parse: parseGitLab},
	{name: "gitea", verify: verifyGitea, parse: parseGitea},
}

// errTooLarge marks a body over maxBodyBytes.
var errTooLarge = errors.New("request body too large")

func (s *Server) webhook(p provider) http.HandlerFunc {
	reason := "webhook:" + p.name
	return func(w http.ResponseWriter, r *http.Request) {
		if s.secret == nil {
			writeText(w, http.StatusNotFound, "webhooks are disabled: berth has no webhook secret configured")
			return
		}
		reject := func() {
			s.metrics.webhook(p.name, webhookUnauthorized)
			// No detail on what was wrong, and nothing from the request
			// in the log beyond where it came from.
			s.log.Warn("webhook rejected: signature or token does not match", "provider", p.name, "remote", r.RemoteAddr)
			writeText(w, http.StatusUnauthorized, "unauthorized: signature or token does not match")
		}
		if p.headerAuth && !p.verify(r.Header, nil, s.secret) {
			reject()
			return
		}
		body, err := readBody(w, r)
		if err != nil {
			s.metrics.webhook(p.name, webhookBadRequest)
			code := http.StatusBadRequest
			if errors.Is(err, errTooLarge) {
				code = http.StatusRequestEntityTooLarge
			}
			writeText(w, code, err.Error())
			return
		}
		if !p.headerAuth && !p.verify(r.Header, body, s.secret) {
			reject()
			return
		}
		d, err := p.parse(r.Header, body)
		if err != nil {
			s.metrics.webhook(p.name, webhookBadRequest)
			writeText(w, http.StatusBadRequest, "bad request: "+err.Error())
			return
		}
		switch {
		case d.kind == eventPing:
			s.metrics.webhook(p.name, webhookIgnored)
			writeText(w, http.StatusOK, "pong")
		case d.kind != eventPush:
			s.metrics.webhook(p.name, webhookIgnored)
			writeText(w, http.StatusOK, fmt.Sprintf("ignored: event %q", d.event))
		case d.ref != "refs/heads/"+s.cfg.Branch:
			// Other branches and tags: acknowledged, so the host does not
			// report a failed delivery, but no run.
			s.metrics.webhook(p.name, webhookIgnored)
			s.log.Debug("webhook push ignored", "provider", p.name, "ref", d.ref, "delivery", d.id)
			writeText(w, http.StatusOK, "ignored: push to "+d.ref)
		default:
			s.backend.Trigger(reason)
			s.metrics.webhook(p.name, webhookTriggered)
			s.log.Info("sync triggered", "reason", reason, "ref", d.ref, "after", d.after, "delivery", d.id)
			writeText(w, http.StatusAccepted, "triggered: push to "+d.ref)
		}
	}
}

// readBody reads at most maxBodyBytes of the request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, fmt.Errorf("%w (limit %d bytes)", errTooLarge, maxBodyBytes)
		}
		return nil, fmt.Errorf("reading request body: %w", err)
	}
	return body, nil
}

// validHMAC reports whether sigHex is the hex HMAC-SHA256 of body under
// secret. hmac.Equal compares in constant time.
func validHMAC(sigHex string, body, secret []byte) bool {
	sig, err := hex.DecodeString(strings.TrimSpace(sigHex))
	if err != nil || len(sig) != sha256.Size {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(sig, mac.Sum(nil))
}

// hubSignature checks GitHub's "sha256=<hex>" header form.
func hubSignature(h http.Header, body, secret []byte) bool {
	hexSig, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
	return ok && validHMAC(hexSig, body, secret)
}

func verifyGitHub(h http.Header, body, secret []byte) bool {
	return hubSignature(h, body, secret)
}

func verifyGitLab(h http.Header, _, secret []byte) bool {
	tok := h.Get("X-Gitlab-Token")
	return tok != "" && secretEqual([]byte(tok), secret)
}

// verifyGitea accepts Gitea's bare hex signature, Forgejo's copy of it, and
// the GitHub form Gitea also sends.
func verifyGitea(h http.Header, body, secret []byte) bool {
	for _, name := range []string{"X-Gitea-Signature", "X-Forgejo-Signature"} {
		if sig := h.Get(name); sig != "" {
			return validHMAC(sig, body, secret)
		}
	}
	return hubSignature(h, body, secret)
}

func parseGitHub(h http.Header, body []byte) (delivery, error) {
	d := delivery{event: h.Get("X-GitHub-Event"), id: h.Get("X-GitHub-Delivery")}
	switch d.event {
	case "":
		return d, errors.New("missing X-GitHub-Event header")
	case "ping":
		d.kind = eventPing
		return d, nil
	case "push":
		// A hook may be set to send form-encoded payloads; the signature
		// covers the raw body either way.
		if ct, _, _ := mime.ParseMediaType(h.Get("Content-Type")); ct == "application/x-www-form-urlencoded" {
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return d, fmt.Errorf("form body: %w", err)
			}
			body = []byte(form.Get("payload"))
		}
		return parsePush(d, body)
	}
	return d, nil
}

func parseGitLab(h http.Header, body []byte) (delivery, error) {
	d := delivery{event: h.Get("X-Gitlab-Event"), id: h.Get("X-Gitlab-Event-UUID")}
	switch d.event {
	case "":
		return d, errors.New("missing X-Gitlab-Event header")
	case "Push Hook":
		return parsePush(d, body)
	case "System Hook":
		// System hooks carry every kind of event; only pushes count.
		d, err := parsePush(d, body)
		if err != nil {
			return d, err
		}
		if d.kind == eventPush && d.eventName != "push" {
			d.kind = eventOther
			d.event = "System Hook: " + d.eventName
		}
		return d, nil
	}
	return d, nil
}

func parseGitea(h http.Header, body []byte) (delivery, error) {
	d := delivery{event: h.Get("X-Gitea-Event"), id: h.Get("X-Gitea-Delivery")}
	if d.event == "" {
		d.event, d.id = h.Get("X-Forgejo-Event"), h.Get("X-Forgejo-Delivery")
	}
	switch d.event {
	case "":
		return d, errors.New("missing X-Gitea-Event header")
	case "push":
		return parsePush(d, body)
	}
	return d, nil
}

// parsePush reads the ref of a push payload. Only the fields berth needs
// are decoded; the rest of the payload may change as it likes.
func parsePush(d delivery, body []byte) (delivery, error) {
	var p pushPayload
	if err := json.Unmarshal(body, &p); err != nil {
		return d, fmt.Errorf("push payload: %w", err)
	}
	switch p.EventName {
	case "", "push", "tag_push":
		if p.Ref == "" {
			return d, errors.New("push payload has no ref")
		}
	}
	d.kind, d.ref, d.after, d.eventName = eventPush, p.Ref, p.After, p.EventName
	return d, nil
}
