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
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Headers of a webhook delivery.
const (
	// SignatureHeader carries "t=<unix seconds>,sha256=<hex>": the time
	// of the attempt and the hex HMAC-SHA256, keyed with the shared
	// secret, of "<t>.<delivery id>.<raw body>". Signing the time and the
	// id (the scheme of Stripe's signatures) lets a receiver refuse a
	// captured request replayed later (an old t) or again (an id seen).
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
	// Now stamps each attempt's signature; default time.Now.
	Now func() time.Time
}

func (w *Webhook) url() string { return w.URL }

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
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	req.Header.Set(SignatureHeader, Sign(secret, now(), delivery, body))
	return req, nil
}

// Sign returns the signature header's value: "t=<unix seconds>,sha256="
// and the hex HMAC-SHA256, keyed with secret, of "<t>.<delivery>.<body>".
func Sign(secret []byte, t time.Time, delivery string, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",sha256=" + hex.EncodeToString(signature(secret, ts, delivery, body))
}

func signature(secret []byte, ts, delivery string, body []byte) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "." + delivery + "."))
	mac.Write(body)
	return mac.Sum(nil)
}

// DefaultMaxAge is how old a signature a receiver should take: berth
// signs each attempt anew, so only a delayed or replayed request is older.
const DefaultMaxAge = 5 * time.Minute

// Verify checks a delivery: header (X-Berth-Signature) must be the
// signature, with secret, of body and delivery (X-Berth-Delivery), made
// within maxAge of now either way (clocks drift). It compares in
// constant time; a receiver written in Go can call it as is, and should
// also drop a delivery id it has seen within maxAge.
func Verify(secret, body []byte, delivery, header string, now time.Time, maxAge time.Duration) error {
	ts, sum, ok := strings.Cut(header, ",")
	ts, okT := strings.CutPrefix(ts, "t=")
	sum, okS := strings.CutPrefix(sum, "sha256=")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if !ok || !okT || !okS || err != nil {
		return errors.New("signature: want t=<unix seconds>,sha256=<hex>")
	}
	got, err := hex.DecodeString(sum)
	if err != nil || !hmac.Equal(got, signature(secret, ts, delivery, body)) {
		return errors.New("signature does not match")
	}
	if age := now.Sub(time.Unix(unix, 0)); age > maxAge || age < -maxAge {
		return fmt.Errorf("signature made %s from now, more than %s: a replay or a clock off", age.Round(time.Second), maxAge)
	}
	return nil
}

// newDeliveryID is a random 128-bit id in hex.
func newDeliveryID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
