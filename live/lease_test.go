package live

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/internal/testlxd"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler"
)

// leaseT0 is where the lease tests' fake clocks start.
var leaseT0 = time.Unix(2_000_000_000, 0)

// armed waits until n timers are armed on fc. Its bound in real time only
// turns a hang (code that does not wait where the test expects) into a
// failure; it is no synchronisation.
func armed(t *testing.T, fc *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := fc.BlockUntilContext(ctx, n); err != nil {
		t.Fatalf("waiting for %d armed timers (%d armed): %v", n, fc.Waiters(), err)
	}
}

// within receives from c, failing after 10s of real time (a hang).
func within[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no result", what)
		panic("unreachable")
	}
}

type acquired struct {
	st  reconciler.LeaseState
	err error
}

// acquireOn runs l.Acquire, moving fc on to each timer as Acquire arms it
// (the settle wait of a take, the pauses between contended attempts). It
// is for a lease on fc while nothing else has a timer armed on it, so
// each move goes to Acquire's own next wait.
func acquireOn(t *testing.T, fc *clock.Fake, l *Lease) (reconciler.LeaseState, error) {
	t.Helper()
	done := make(chan acquired, 1)
	go func() {
		st, err := l.Acquire(context.Background())
		done <- acquired{st, err}
	}()
	bound := time.After(10 * time.Second)
	for {
		ctx, cancel := context.WithCancel(context.Background())
		waits := make(chan struct{})
		go func() {
			if fc.BlockUntilContext(ctx, 1) == nil {
				close(waits)
			}
		}()
		select {
		case r := <-done:
			cancel()
			return r.st, r.err
		case <-waits:
			cancel()
			if d, ok := fc.Next(); ok {
				fc.Advance(d)
			}
		case <-bound:
			cancel()
			t.Fatal("Acquire did not return")
		}
	}
}

func TestParseLease(t *testing.T) {
	h, exp := parseLease("host-a:12 1700000000")
	if h != "host-a:12" || exp.Unix() != 1700000000 {
		t.Errorf("parse = %q %v", h, exp)
	}
	if h, _ := parseLease("h\x1b[2K\u00e9 1700000000"); h != `"h\x1b[2K\u00e9"` {
		t.Errorf("a holder with control characters reads as %s", h)
	}
	for _, bad := range []string{"", "nospace", "h notanumber"} {
		if h, _ := parseLease(bad); h != "" {
			t.Errorf("parseLease(%q) holder = %q", bad, h)
		}
	}
}

// TestLeaseOnRealLXD runs two holders against the real server config, on
// a fake clock: the expiries are in fake time, and a take's read-back
// waits its second of fake time.
func TestLeaseOnRealLXD(t *testing.T) {
	ctx := context.Background()
	c := realLXD(t)
	owner := "lease-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	fc := clock.NewFake(leaseT0)
	a := &Lease{LXD: c, Owner: owner, Holder: "a", TTL: 30 * time.Second, Clock: fc}
	b := &Lease{LXD: c, Owner: owner, Holder: "b", TTL: 30 * time.Second, Clock: fc}
	t.Cleanup(func() {
		_ = c.PatchServerConfig(context.Background(), map[string]any{ownership.LeaseKey(owner, ""): ""}, "")
	})

	now := fc.Now()
	if st, err := acquireOn(t, fc, a); !st.Held || err != nil || !st.Expiry.Equal(now.Add(30*time.Second)) {
		t.Fatalf("a: %+v err %v", st, err)
	}
	// b learns who holds it and until when: a waiting daemon wakes then.
	if st, err := b.Acquire(ctx); st.Held || err != nil || st.Holder != "a" || !st.Expiry.Equal(now.Add(30*time.Second)) {
		t.Fatalf("b while a holds: %+v err %v", st, err)
	}
	fc.Advance(10 * time.Second)
	now = fc.Now()
	if st, _ := a.Acquire(ctx); !st.Held || !st.Expiry.Equal(now.Add(30*time.Second)) {
		t.Fatalf("a cannot renew: %+v", st)
	}
	// a stops renewing: b takes over after the expiry.
	fc.Advance(31 * time.Second)
	if st, err := acquireOn(t, fc, b); !st.Held || err != nil {
		t.Fatalf("b after expiry: %+v err %v", st, err)
	}
	if st, _ := a.Acquire(ctx); st.Held {
		t.Fatal("a took the lease back from b")
	}
	// Release by a non-holder changes nothing; by the holder frees it.
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Acquire(ctx); st.Held {
		t.Fatal("a's release freed b's lease")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := acquireOn(t, fc, a); !st.Held {
		t.Fatal("lease not free after b released it")
	}
}

// leaseLXD is the server config part of LXD on a unix socket: GET /1.0 and
// PATCH /1.0 with If-Match, and a switch that fails every PATCH with 412,
// as when other owners keep renewing their leases.
type leaseLXD struct {
	mu      sync.Mutex
	config  map[string]any
	version int
	always  bool // every PATCH: 412
	patches int
	// racy: PATCH ignores If-Match (LXD checks the ETag and writes in two
	// steps, so racing PATCHes can both pass); gets: GETs to hold back
	// until two have arrived, so two takers read the same state.
	racy    bool
	barrier *sync.WaitGroup
	arrived int
}

func newLeaseLXD(t *testing.T) (*leaseLXD, *lxd.Client) {
	return newLeaseLXDIn(t, "")
}

func newLeaseLXDIn(t *testing.T, project string) (*leaseLXD, *lxd.Client) {
	f := &leaseLXD{config: map[string]any{}}
	sock := filepath.Join(t.TempDir(), "unix.socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := lxd.Connect(context.Background(), lxd.Config{URL: "unix://" + sock, Project: project})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return f, c
}

func (f *leaseLXD) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(code int, body map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}
	etag, config := fmt.Sprintf("v%d", f.version), maps.Clone(f.config)
	if b := f.barrier; b != nil && r.Method == "GET" {
		// Each held GET answers the state it arrived to: both takers read
		// the same state, even when one PATCHes before the other's answer.
		f.arrived++
		if f.arrived == 2 {
			f.barrier = nil
		}
		f.mu.Unlock()
		b.Done()
		b.Wait()
		f.mu.Lock()
	}
	switch {
	case r.Method == "GET" && r.URL.Path == "/1.0":
		w.Header().Set("ETag", `"`+etag+`"`)
		reply(200, map[string]any{"type": "sync", "status": "Success", "status_code": 200, "metadata": map[string]any{
			"api_version": "1.0", "auth": "trusted", "config": config,
			"environment": map[string]any{"server_version": "5.0.2"},
		}})
	case r.Method == "PATCH" && r.URL.Path == "/1.0":
		f.patches++
		if m := strings.Trim(r.Header.Get("If-Match"), `"`); f.always || (m != "" && m != etag && !f.racy) {
			reply(412, map[string]any{"type": "error", "error_code": 412, "error": "ETag doesn't match"})
			return
		}
		var body struct {
			Config map[string]any `json:"config"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		for k, v := range body.Config {
			f.config[k] = v
		}
		f.version++
		reply(200, map[string]any{"type": "sync", "status": "Success", "status_code": 200})
	default:
		reply(404, map[string]any{"type": "error", "error_code": 404, "error": "not found"})
	}
}

// TestLeaseContended: after repeated 412s Acquire says so with
// ErrLeaseContended, not "not held": nobody else holds the lease. The
// pauses between attempts are on the lease's (fake) clock.
func TestLeaseContended(t *testing.T) {
	f, c := newLeaseLXD(t)
	fc := clock.NewFake(leaseT0)
	l := &Lease{LXD: c, Owner: "o", Holder: "me", TTL: time.Minute, Settle: time.Millisecond, Clock: fc}
	f.mu.Lock()
	f.always = true
	f.mu.Unlock()
	st, err := acquireOn(t, fc, l)
	if !errors.Is(err, ErrLeaseContended) || st.Held || st.Holder != "" {
		t.Fatalf("Acquire under contention = %+v, %v; want ErrLeaseContended", st, err)
	}
	if f.patches != acquireTries {
		t.Errorf("%d attempts, want %d", f.patches, acquireTries)
	}
	if waited := fc.Since(leaseT0); waited < (acquireTries-1)*10*time.Millisecond {
		t.Errorf("the attempts were %v apart in all: not paced by the lease's clock", waited)
	}
	f.mu.Lock()
	f.always = false
	f.mu.Unlock()
	if st, err := acquireOn(t, fc, l); err != nil || !st.Held {
		t.Fatalf("Acquire once the contention ends = %+v, %v", st, err)
	}
}

// TestHoldRenewsAndLoses: Hold refuses a held lease naming the holder and
// its expiry, waits for it with a wait, renews its own, and cancels its
// context with ErrLeaseLost when another takes the lease. All on a fake
// clock: the test moves time to each wait the lease arms.
func TestHoldRenewsAndLoses(t *testing.T) {
	f, c := newLeaseLXD(t)
	ctx := context.Background()
	fc := clock.NewFake(leaseT0)
	other := &Lease{LXD: c, Owner: "o", Holder: "berth-run@h:1:abc", TTL: 3 * time.Second, Settle: time.Millisecond, Clock: fc}
	if st, err := acquireOn(t, fc, other); err != nil || !st.Held {
		t.Fatal(st, err)
	}
	me := &Lease{LXD: c, Owner: "o", Holder: "berth-apply@h:2:def", TTL: 3 * time.Second, Settle: time.Millisecond, Clock: fc}
	_, err := me.Hold(ctx, 0, nil)
	var busy *BusyError
	if !errors.As(err, &busy) || busy.State.Holder != other.Holder || busy.State.Expiry.IsZero() ||
		!strings.Contains(err.Error(), `owner "o" is held by berth-run@h:1:abc (until `) {
		t.Fatalf("Hold while another holds it = %v", err)
	}
	// With a wait: the other's lease runs out (it does not renew) and is
	// taken. Each wait is announced, then armed; once the other's expiry
	// has passed, the next attempt takes the lease and reads it back.
	waits := make(chan reconciler.LeaseState, 16)
	type holdResult struct {
		h   *Held
		err error
	}
	done := make(chan holdResult, 1)
	go func() {
		h, err := me.Hold(ctx, 10*time.Second, func(st reconciler.LeaseState) { waits <- st })
		done <- holdResult{h, err}
	}()
	waited := 0
	for fc.Now().Before(busy.State.Expiry) {
		within(t, waits, "Hold's waiting callback")
		waited++
		armed(t, fc, 1)
		d, _ := fc.Next()
		fc.Advance(d)
	}
	armed(t, fc, 1)
	fc.Advance(me.Settle)
	res := within(t, done, "Hold")
	h, err := res.h, res.err
	if err != nil || waited == 0 {
		t.Fatalf("Hold with a wait = %v after %d waits", err, waited)
	}
	if len(waits) != 0 {
		t.Errorf("Hold waited %d more times after the expiry", len(waits))
	}
	// Renewed in the background every TTL/3: still ours after more than
	// one TTL. Each renewal is written before the next wait is armed.
	first := h.Expiry()
	for range 4 {
		armed(t, fc, 1)
		fc.Advance(time.Second)
	}
	armed(t, fc, 1)
	if h.Lost() != nil || h.Context().Err() != nil {
		t.Fatalf("lost a renewed lease: %v", h.Lost())
	}
	if !h.Expiry().After(first) || !h.Expiry().After(fc.Now()) {
		t.Errorf("expiry %v after renewals (first %v, now %v)", h.Expiry(), first, fc.Now())
	}
	if st, _ := other.Acquire(ctx); st.Held || st.Holder != me.Holder {
		t.Fatalf("the lease is not held by the Hold: %+v", st)
	}
	// Another takes it (as if ours had expired): the next renewal finds
	// out and the work context ends.
	f.mu.Lock()
	f.config[ownership.LeaseKey("o", "")] = fmt.Sprintf("thief %d", fc.Now().Add(time.Minute).Unix())
	f.version++
	f.mu.Unlock()
	fc.Advance(time.Second)
	within(t, h.Context().Done(), "the work context after the lease was taken")
	if err := h.Lost(); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "thief") {
		t.Errorf("Lost = %v", err)
	}
	if err := h.Release(ctx); err != nil {
		t.Errorf("Release after the loss = %v", err)
	}
	f.mu.Lock()
	v := f.config[ownership.LeaseKey("o", "")]
	f.mu.Unlock()
	if !strings.HasPrefix(v.(string), "thief ") {
		t.Errorf("Release changed the thief's lease: %q", v)
	}
}

// TestHoldReleases: Release gives the lease up at once, so the next
// writer need not wait for the expiry; a cancelled parent context ends
// the work context but not the renewal.
func TestHoldReleases(t *testing.T) {
	_, c := newLeaseLXD(t)
	fc := clock.NewFake(leaseT0)
	ctx, cancel := context.WithCancel(context.Background())
	me := &Lease{LXD: c, Owner: "o", Holder: "a", TTL: 3 * time.Second, Settle: time.Millisecond, Clock: fc}
	type holdResult struct {
		h   *Held
		err error
	}
	done := make(chan holdResult, 1)
	go func() {
		h, err := me.Hold(ctx, 0, nil)
		done <- holdResult{h, err}
	}()
	armed(t, fc, 1) // the take's read-back
	fc.Advance(me.Settle)
	res := within(t, done, "Hold")
	h, err := res.h, res.err
	if err != nil {
		t.Fatal(err)
	}
	cancel() // Ctrl-C: running steps drain while the lease is still renewed
	if h.Context().Err() == nil {
		t.Error("the work context outlived its parent")
	}
	// 3.5s on: past the first take's expiry, with a renewal every second.
	for range 3 {
		armed(t, fc, 1)
		fc.Advance(time.Second)
	}
	armed(t, fc, 1)
	fc.Advance(500 * time.Millisecond)
	next := &Lease{LXD: c, Owner: "o", Holder: "b", TTL: 3 * time.Second, Settle: time.Millisecond, Clock: fc}
	if st, _ := next.Acquire(context.Background()); st.Held {
		t.Fatal("the lease was not renewed after the parent context ended")
	}
	if err := h.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := fc.Waiters(); n != 0 {
		t.Errorf("%d timers armed after Release: the renewal goes on", n)
	}
	if st, err := acquireOn(t, fc, next); !st.Held || err != nil {
		t.Fatalf("not free after Release: %+v %v", st, err)
	}
}

func TestHolderID(t *testing.T) {
	id := HolderID("apply", "my host", 42)
	if !strings.HasPrefix(id, "berth-apply@my_host:42:") || strings.Contains(id, " ") {
		t.Errorf("HolderID = %q", id)
	}
}

// realLXD connects to the local LXD, or skips or fails the test as
// testlxd decides (-short, no LXD, CI, BERTH_REQUIRE_LXD).
func realLXD(t *testing.T) *lxd.Client {
	t.Helper()
	testlxd.Short(t)
	c, err := lxd.Connect(context.Background(), lxd.Config{})
	testlxd.SkipUnlessUsable(t, err)
	t.Cleanup(c.Close)
	return c
}

// TestLeaseKeyPerProject: owners of the same name in different projects
// manage different instances, so each project has its own lease.
func TestLeaseKeyPerProject(t *testing.T) {
	if k := ownership.LeaseKey("o", ""); k != "user.berth.lease.o" {
		t.Errorf("default project: %s", k)
	}
	if k := ownership.LeaseKey("o", "default"); k != "user.berth.lease.o" {
		t.Errorf("project default: %s", k)
	}
	f, c := newLeaseLXDIn(t, "p1")
	l := &Lease{LXD: c, Owner: "o", Holder: "me", TTL: time.Minute, Settle: time.Millisecond}
	if st, err := l.Acquire(context.Background()); err != nil || !st.Held {
		t.Fatal(st, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, _ := f.config["user.berth.lease.o@p1"].(string); !strings.HasPrefix(v, "me ") {
		t.Errorf("server config after Acquire in p1: %v", f.config)
	}
}

// TestLeaseRacingTakes: two takers read the free lease at the same moment
// and both PATCHes pass (LXD's If-Match is no compare-and-swap under
// concurrency); only the one whose value stayed holds it. Both read back
// once both wait to settle on the fake clock, so both PATCHes have landed.
func TestLeaseRacingTakes(t *testing.T) {
	for range 5 {
		f, c := newLeaseLXD(t)
		fc := clock.NewFake(leaseT0)
		var both sync.WaitGroup
		both.Add(2)
		f.mu.Lock()
		f.racy, f.barrier = true, &both
		f.mu.Unlock()
		results := make(chan reconciler.LeaseState, 2)
		for _, who := range []string{"a", "b"} {
			go func() {
				l := &Lease{LXD: c, Owner: "o", Holder: who, TTL: time.Minute, Settle: 50 * time.Millisecond, Clock: fc}
				st, err := l.Acquire(context.Background())
				if err != nil {
					t.Error(err)
				}
				results <- st
			}()
		}
		armed(t, fc, 2)
		fc.Advance(50 * time.Millisecond)
		x, y := within(t, results, "a take"), within(t, results, "a take")
		if x.Held == y.Held {
			t.Fatalf("racing takes: %+v and %+v; want exactly one held", x, y)
		}
		loser := x
		if x.Held {
			loser = y
		}
		if loser.Holder == "" || loser.Expiry.IsZero() {
			t.Errorf("the loser does not learn the holder: %+v", loser)
		}
	}
}

// TestRenewNeverTakes: a renewal that finds the lease key deleted (by
// hand: `lxc config unset`), garbled or another's has lost the lease and
// writes nothing, where Acquire would take the free lease; a Hold's work
// context ends with ErrLeaseLost saying so, and the lease stays free for
// the writer that may have taken it meanwhile.
func TestRenewNeverTakes(t *testing.T) {
	key := ownership.LeaseKey("o", "")
	for _, tc := range []struct {
		name, value, holder string
	}{
		{"deleted", "", ""},
		{"garbled", "nonsense", ""},
		{"another's", fmt.Sprintf("thief %d", leaseT0.Add(time.Hour).Unix()), "thief"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newLeaseLXD(t)
			fc := clock.NewFake(leaseT0)
			me := &Lease{LXD: c, Owner: "o", Holder: "me", TTL: 3 * time.Second, Settle: time.Millisecond, Clock: fc}
			if st, err := acquireOn(t, fc, me); err != nil || !st.Held {
				t.Fatal(st, err)
			}
			if st, err := me.Renew(context.Background()); err != nil || !st.Held {
				t.Fatalf("Renew of a held lease = %+v, %v", st, err)
			}
			set := func(v string) {
				f.mu.Lock()
				defer f.mu.Unlock()
				if v == "" {
					delete(f.config, key)
				} else {
					f.config[key] = v
				}
				f.version++
			}
			set(tc.value)
			f.mu.Lock()
			patches := f.patches
			f.mu.Unlock()
			st, err := me.Renew(context.Background())
			if err != nil || st.Held || st.Holder != tc.holder {
				t.Errorf("Renew after the key was %s = %+v, %v; want not held, holder %q", tc.name, st, err, tc.holder)
			}
			f.mu.Lock()
			if f.patches != patches || f.config[key] != nil && f.config[key] != tc.value {
				t.Errorf("Renew wrote the lease: %d patches, value %v", f.patches-patches, f.config[key])
			}
			f.mu.Unlock()

			// A Hold loses it at its next renewal, and says why.
			set("")
			done := make(chan *Held, 1)
			go func() {
				h, err := me.Hold(context.Background(), 0, nil)
				if err != nil {
					t.Error(err)
				}
				done <- h
			}()
			armed(t, fc, 1) // the take's read-back
			fc.Advance(me.Settle)
			h := within(t, done, "Hold")
			if h == nil {
				return
			}
			set(tc.value)
			armed(t, fc, 1)
			fc.Advance(time.Second) // TTL/3: the renewal
			within(t, h.Context().Done(), "the work context after the lease was "+tc.name)
			want := "it was removed (its key deleted or garbled) while held"
			if tc.holder != "" {
				want = "now held by thief"
			}
			if err := h.Lost(); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), want) {
				t.Errorf("Lost = %v, want ErrLeaseLost saying %q", err, want)
			}
			_ = h.Release(context.Background())
			f.mu.Lock()
			if v, _ := f.config[key].(string); v != tc.value {
				t.Errorf("the lease after the holder lost it: %q, want %q", v, tc.value)
			}
			f.mu.Unlock()
		})
	}
}
