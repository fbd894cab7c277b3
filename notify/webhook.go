package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Headers of a webhook delivery.
const (
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the raw
	// request body, keyed with the shared secret: the scheme of GitHub's
	// X-Hub-Signature-256, so receivers that check those check this.
	SignatureHeader = "X-Berth-Signature"
	// EventHeader names the event; "run" is the only one so far.
	EventHeader = "X-Berth-Event"
	// DeliveryHeader is a random id per event, the same on every retry of
	// it, so a receiver can drop a delivery it already has.
	DeliveryHeader = "X-Berth-Delivery"
)

// Payload is the JSON body of a webhook delivery: the Outcome with the
// event's name and schema version. Fields are only ever added.
type Payload struct {
	// Version is the payload's schema version: 1.
	Version int    `json:"version"`
	Event   string `json:"event"`
	Outcome
}

// Webhook posts each run's outcome as signed JSON to a URL.
type Webhook struct {
	URL string
	// Secret returns the HMAC key; it is read for each delivery.
	Secret func() ([]byte, error)
}

// Check reports a configuration that cannot work.
func (w *Webhook) Check() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return errors.New("webhook URL: want an http(s) URL")
	}
	return nil
}

// Name is the target's label in metrics and logs.
func (w *Webhook) Name() string { return "webhook" }

// Key makes a run that changes nothing (same revision, result, verdict
// and apps) go unsent.
func (w *Webhook) Key(o Outcome) string {
	o.Started, o.Finished = time.Time{}, time.Time{} // they differ run to run
	b, _ := json.Marshal(o)
	return string(b)
}

// Request builds the signed POST.
func (w *Webhook) Request(ctx context.Context, o Outcome, delivery string) (*http.Request, error) {
	secret, err := w.Secret()
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(Payload{Version: 1, Event: "run", Outcome: o})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(EventHeader, "run")
	req.Header.Set(DeliveryHeader, delivery)
	req.Header.Set(SignatureHeader, Sign(secret, body))
	return req, nil
}

// Sign returns the signature header's value for body: "sha256=" and the
// hex HMAC-SHA256 of body keyed with secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether header is body's signature with secret. It
// compares in constant time; a receiver written in Go can call it as is.
func Verify(secret, body []byte, header string) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

// newDeliveryID is a random 128-bit id in hex.
func newDeliveryID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
