package server

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"time"
)

// The status page's routes:
//
//	GET /                 the page (HTML; refreshes itself without JavaScript)
//	GET /ui/style.css     its style sheet
//	GET /ui/live.js       its script: subscribes to /api/v1/events
//	GET /api/v1/events    server-sent events: "update" carries the new content of <main>

// contentSecurityPolicy lets the page load its own style sheet and script
// and nothing else: no inline script or style, no event handler attribute,
// no other origin. Escaping keeps markup out; this keeps a slip from
// running.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Event streams: how long a write may take before the client is dropped,
// how often an idle stream gets a keep-alive (and the page its ages
// refreshed), how long a burst of changes is gathered into one event, and
// how many streams may be open at once.
const (
	eventWriteTimeout = 15 * time.Second
	eventRefresh      = 10 * time.Second
	eventDebounce     = 200 * time.Millisecond
	maxEventStreams   = 64
)

func pageHeaders(w http.ResponseWriter, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

func (p *Page) serveIndex(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	if err := p.render(&b); err != nil {
		writeText(w, http.StatusInternalServerError, "rendering the page: "+err.Error())
		return
	}
	pageHeaders(w, "text/html; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}

// serveAsset serves an embedded file. No cache validators exist for
// embedded files, and both are small: browsers fetch them again.
func serveAsset(name, contentType string) http.HandlerFunc {
	body, err := uiFS.ReadFile("ui/" + name)
	if err != nil {
		panic(err) // embedded at build time: a missing file is a bug
	}
	return func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w, contentType)
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	}
}

// serveEvents streams the content of <main> as server-sent events: once at
// once, then after every change (gathered for eventDebounce). Every
// eventRefresh it renders again (the status changes without a hook, e.g.
// the phase) and sends what differs, or a keep-alive comment that finds
// dead clients. It ends when the client goes, the server shuts down
// (Close) or a write stalls.
func (p *Page) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case p.streams <- struct{}{}:
		defer func() { <-p.streams }()
	default:
		w.Header().Set("Retry-After", "30")
		writeText(w, http.StatusServiceUnavailable, "too many event streams")
		return
	}
	rc := http.NewResponseController(w)
	// The server's read timeout would end the stream (it cancels the
	// request's context); the stream reads nothing, and dead clients are
	// found by the write deadline.
	_ = rc.SetReadDeadline(time.Time{})
	pageHeaders(w, "text/event-stream; charset=utf-8")
	w.Header().Set("X-Accel-Buffering", "no") // reverse proxies: do not buffer
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	send := func(s string) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := io.WriteString(w, s); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// A reconnecting EventSource waits this long (ms).
	if !send("retry: 3000\n\n") {
		return
	}
	tick := time.NewTicker(eventRefresh)
	defer tick.Stop()
	last := ""
	for {
		html, wake, err := p.mainHTML()
		switch {
		case err != nil:
			p.cfg.logger().Error("rendering the status page", "err", err)
			if !send(": render error\n\n") {
				return
			}
		case html != last:
			if !send(sseEvent("update", html)) {
				return
			}
			last = html
		}
		select {
		case <-r.Context().Done():
			return
		case <-p.closed:
			return
		case <-tick.C:
			if html == last && !send(": keep-alive\n\n") {
				return
			}
		case <-wake:
			// Gather a burst (a batch of steps starting) into one event.
			t := time.NewTimer(eventDebounce)
			select {
			case <-r.Context().Done():
				t.Stop()
				return
			case <-p.closed:
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// sseEvent frames data as one server-sent event. Every line of it becomes
// a data line: a CR or LF in a value cannot end the event or start a field.
func sseEvent(name, data string) string {
	var b strings.Builder
	b.WriteString("event: " + name + "\n")
	data = strings.ReplaceAll(data, "\r\n", "\n")
	data = strings.ReplaceAll(data, "\r", "\n")
	for _, line := range strings.Split(data, "\n") {
		b.WriteString("data: ")
		b.WriteString(line)
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	return b.String()
}
