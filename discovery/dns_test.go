package discovery_test

import (
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
)

func TestAppARecordsHoldTheReadyReplicas(t *testing.T) {
	d := newDiscovery(t)
	d.Update(fleet(webApp(3), plantest.App("db", 1, 1, "pg:16")))
	r := ask(d, "web.berth.internal.", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !r.Authoritative {
		t.Fatalf("rcode %s, aa %v", dns.RcodeToString[r.Rcode], r.Authoritative)
	}
	want := map[string]bool{"10.0.0.10": true, "10.0.0.11": true, "10.0.0.12": true}
	if got := set(r.Answer); !maps.Equal(got, want) {
		t.Errorf("web: %v, want %v", got, want)
	}
	for _, rr := range r.Answer {
		if rr.Header().Ttl != 5 || rr.Header().Name != "web.berth.internal." {
			t.Errorf("record %v: want TTL 5 at web.berth.internal.", rr)
		}
	}
	// The list turns from one answer to the next, so clients that take
	// the first address spread over the replicas.
	firsts := map[string]bool{}
	for range 3 {
		firsts[addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer)[0]] = true
	}
	if len(firsts) != 3 {
		t.Errorf("first addresses over 3 answers: %v, want all 3", firsts)
	}
	if got := addrs(ask(d, "db.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, []string{"10.0.1.10"}) {
		t.Errorf("db: %v", got)
	}
}

func TestInstanceARecordWhateverItsReadiness(t *testing.T) {
	d := newDiscovery(t)
	v := fleet(webApp(2))
	instance(t, &v, "web-1").Container.Health = "starting"
	instance(t, &v, "web-1").Addresses = []string{"fe80::1", "10.0.0.11", "192.168.1.1"}
	d.Update(v)
	for name, want := range map[string]string{"web-0.web.berth.internal.": "10.0.0.10", "web-1.web.berth.internal.": "10.0.0.11"} {
		r := ask(d, name, dns.TypeA)
		if got := addrs(r.Answer); r.Rcode != dns.RcodeSuccess || !slices.Equal(got, []string{want}) {
			t.Errorf("%s: %s %v, want %s (the first IPv4 only)", name, dns.RcodeToString[r.Rcode], got, want)
		}
	}
}

func TestSRVRecordsWithTheirAddresses(t *testing.T) {
	d := newDiscovery(t)
	d.Update(fleet(webApp(2)))
	r := ask(d, "_http._tcp.web.berth.internal.", dns.TypeSRV)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("%s, %d answers: %v", dns.RcodeToString[r.Rcode], len(r.Answer), r.Answer)
	}
	for i, rr := range r.Answer {
		srv := rr.(*dns.SRV)
		target := []string{"web-0.web.berth.internal.", "web-1.web.berth.internal."}[i]
		if srv.Target != target || srv.Port != 8080 || srv.Priority != 10 || srv.Weight != 10 || srv.Hdr.Ttl != 5 {
			t.Errorf("SRV %d: %v, want target %s port 8080", i, srv, target)
		}
	}
	if len(r.Extra) != 2 {
		t.Fatalf("additional: %v", r.Extra)
	}
	for i, rr := range r.Extra {
		a := rr.(*dns.A)
		name, ip := []string{"web-0.web.berth.internal.", "web-1.web.berth.internal."}[i], []string{"10.0.0.10", "10.0.0.11"}[i]
		if a.Hdr.Name != name || a.A.String() != ip {
			t.Errorf("additional %d: %v, want %s A %s", i, a, name, ip)
		}
	}
	udp := ask(d, "_dns._udp.web.berth.internal.", dns.TypeSRV)
	if len(udp.Answer) != 2 || udp.Answer[0].(*dns.SRV).Port != 53 {
		t.Errorf("_dns._udp: %v", udp.Answer)
	}
}

func TestNotReadyReplicaIsAbsent(t *testing.T) {
	for name, breakIt := range map[string]func(v *reconciler.View){
		"health starting":   func(v *reconciler.View) { instance(t, v, "web-1").Container.Health = "starting" },
		"container exited":  func(v *reconciler.View) { instance(t, v, "web-1").Container.State = "exited" },
		"instance stopped":  func(v *reconciler.View) { instance(t, v, "web-1").Status = "Stopped" },
		"docker unknown":    func(v *reconciler.View) { instance(t, v, "web-1").DockerError = "timeout" },
		"no app container":  func(v *reconciler.View) { instance(t, v, "web-1").Container = nil },
		"no IPv4 address":   func(v *reconciler.View) { instance(t, v, "web-1").Addresses = []string{"fd00::1"} },
		"no address at all": func(v *reconciler.View) { instance(t, v, "web-1").Addresses = nil },
	} {
		t.Run(name, func(t *testing.T) {
			d := newDiscovery(t)
			v := fleet(webApp(2))
			breakIt(&v)
			d.Update(v)
			if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, []string{"10.0.0.10"}) {
				t.Errorf("A: %v, want web-0 only", got)
			}
			srv := ask(d, "_http._tcp.web.berth.internal.", dns.TypeSRV)
			if len(srv.Answer) != 1 || srv.Answer[0].(*dns.SRV).Target != "web-0.web.berth.internal." {
				t.Errorf("SRV: %v, want web-0 only", srv.Answer)
			}
			// The replica's own name still exists.
			if r := ask(d, "web-1.web.berth.internal.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
				t.Errorf("web-1's own name: %s", dns.RcodeToString[r.Rcode])
			}
		})
	}
}

func TestDrainedReplicaIsAbsentUntilUndrainedAndSeenReady(t *testing.T) {
	d := newDiscovery(t)
	v := fleet(webApp(2))
	d.Update(v)
	inWeb := func() []string {
		got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer)
		slices.Sort(got)
		return got
	}
	both, one := []string{"10.0.0.10", "10.0.0.11"}, []string{"10.0.0.11"}
	d.Drain("web-0")
	if got := inWeb(); !slices.Equal(got, one) {
		t.Fatalf("drained: %v, want %v", got, one)
	}
	if srv := ask(d, "_http._tcp.web.berth.internal.", dns.TypeSRV); len(srv.Answer) != 1 {
		t.Errorf("drained, SRV: %v", srv.Answer)
	}
	if got := addrs(ask(d, "web-0.web.berth.internal.", dns.TypeA).Answer); len(got) != 1 {
		t.Errorf("a drained replica keeps its own name: %v", got)
	}
	d.Update(v) // a view while drained changes nothing
	if got := inWeb(); !slices.Equal(got, one) {
		t.Fatalf("drained, after a view: %v", got)
	}
	d.Undrain("web-0", false)
	if got := inWeb(); !slices.Equal(got, one) {
		t.Fatalf("undrained after a failed step, no view since: %v, want %v (the last view predates the step)", got, one)
	}
	down := fleet(webApp(2))
	instance(t, &down, "web-0").Container.Health = "starting"
	d.Update(down)
	if got := inWeb(); !slices.Equal(got, one) {
		t.Fatalf("undrained, seen starting: %v", got)
	}
	d.Update(v)
	if got := inWeb(); !slices.Equal(got, both) {
		t.Fatalf("undrained and seen ready: %v, want %v", got, both)
	}
	// A step that ended with the replica ready lets it back at once.
	d.Drain("web-0")
	if got := inWeb(); len(got) != 1 {
		t.Fatalf("drained again: %v", got)
	}
	d.Undrain("web-0", true)
	if got := inWeb(); !slices.Equal(got, both) {
		t.Fatalf("undrained ready: %v, want %v at once", got, both)
	}
	// Undrain without Drain, and an unknown instance: nothing happens.
	d.Undrain("web-1", true)
	d.Drain("nope-0")
	if got := inWeb(); !slices.Equal(got, both) {
		t.Fatalf("after stray calls: %v", got)
	}
}

func TestChangeTakesAReplicaOutAtOnce(t *testing.T) {
	d := newDiscovery(t)
	v := fleet(webApp(2))
	d.Update(v)
	d.Change(reconciler.Change{Instance: "web-1", Action: "instance-started"}) // not a down: ignored
	if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); len(got) != 2 {
		t.Fatalf("after a start: %v", got)
	}
	d.Change(reconciler.Change{Instance: "web-1", Action: "instance-stopped"})
	if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, []string{"10.0.0.10"}) {
		t.Fatalf("after a stop: %v", got)
	}
	d.Update(v) // observed ready again (restarted)
	if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); len(got) != 2 {
		t.Fatalf("seen ready again: %v", got)
	}

	// A view whose observe began before the change knows nothing of it:
	// it does not bring the replica back; one begun after it does.
	t0 := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	d.Change(reconciler.Change{Instance: "web-1", Action: "container-die", At: t0})
	stale := v
	stale.Started = t0.Add(-time.Second)
	d.Update(stale)
	if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); len(got) != 1 {
		t.Fatalf("a view observed before the change let web-1 back: %v", got)
	}
	fresh := v
	fresh.Started = t0.Add(time.Second)
	d.Update(fresh)
	if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); len(got) != 2 {
		t.Fatalf("a view observed after the change, showing it ready: %v", got)
	}
}

func TestOnlyTheOwnersReplicas(t *testing.T) {
	d, err := discovery.New(discovery.Config{Owner: "team-a"})
	if err != nil {
		t.Fatal(err)
	}
	v := fleet(webApp(2)) // owned by "berth"
	instance(t, &v, "web-1").Config["user.berth.owner"] = "team-a"
	garbled := *instance(t, &v, "web-0")
	garbled.Name, garbled.Config = "web-7", map[string]string{"user.berth.owner": "team-a", "user.berth.app": "web", "user.berth.slot": "3"}
	v.Observed.Instances = append(v.Observed.Instances, garbled)
	d.Update(v)
	if got := addrs(ask(d, "web.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, []string{"10.0.0.11"}) {
		t.Errorf("A: %v, want team-a's web-1 only", got)
	}
	for _, name := range []string{"web-0.web.berth.internal.", "web-7.web.berth.internal.", "web-3.web.berth.internal."} {
		if r := ask(d, name, dns.TypeA); r.Rcode != dns.RcodeNameError {
			t.Errorf("%s: %s, want NXDOMAIN", name, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestNegativeAnswers(t *testing.T) {
	d := newDiscovery(t)
	v := fleet(webApp(1), plantest.App("idle", 0, 1, "x:1"))
	d.Update(v)
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode int
	}{
		{"nope.berth.internal.", dns.TypeA, dns.RcodeNameError},
		{"web-9.web.berth.internal.", dns.TypeA, dns.RcodeNameError},
		{"_ftp._tcp.web.berth.internal.", dns.TypeSRV, dns.RcodeNameError},
		{"x.web-0.web.berth.internal.", dns.TypeA, dns.RcodeNameError},
		// Names that exist, with no record of the type: NODATA.
		{"web.berth.internal.", dns.TypeAAAA, dns.RcodeSuccess},
		{"web.berth.internal.", dns.TypeTXT, dns.RcodeSuccess},
		{"web-0.web.berth.internal.", dns.TypeSRV, dns.RcodeSuccess},
		{"_http._tcp.web.berth.internal.", dns.TypeA, dns.RcodeSuccess},
		{"_tcp.web.berth.internal.", dns.TypeA, dns.RcodeSuccess}, // between names
		{"idle.berth.internal.", dns.TypeA, dns.RcodeSuccess},     // an app with no replica
		{"berth.internal.", dns.TypeA, dns.RcodeSuccess},
	} {
		r := ask(d, c.name, c.qtype)
		if r.Rcode != c.rcode || len(r.Answer) != 0 || !r.Authoritative {
			t.Errorf("%s %s: %s with %d answers (aa %v), want %s and none",
				c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative, dns.RcodeToString[c.rcode])
			continue
		}
		if len(r.Ns) != 1 {
			t.Errorf("%s: authority %v, want the SOA", c.name, r.Ns)
			continue
		}
		soa, ok := r.Ns[0].(*dns.SOA)
		if !ok || soa.Hdr.Name != "berth.internal." || soa.Minttl != 5 || soa.Hdr.Ttl != 5 || soa.Serial != uint32(at.Unix()) {
			t.Errorf("%s: authority %v, want the zone's SOA with TTL and minimum 5", c.name, r.Ns[0])
		}
	}
	if r := ask(d, "berth.internal.", dns.TypeSOA); len(r.Answer) != 1 {
		t.Errorf("SOA at the apex: %v", r.Answer)
	}
}

func TestRefusedOutsideTheZone(t *testing.T) {
	d := newDiscovery(t)
	for _, name := range []string{"example.com.", "internal.", ".", "berth.internal.example.com.", "xberth.internal."} {
		if r := ask(d, name, dns.TypeA); r.Rcode != dns.RcodeRefused || r.Authoritative {
			t.Errorf("%s before a view: %s", name, dns.RcodeToString[r.Rcode])
		}
	}
	d.Update(fleet(webApp(1)))
	if r := ask(d, "example.com.", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("example.com: %s", dns.RcodeToString[r.Rcode])
	}
	q := new(dns.Msg)
	q.SetQuestion("web.berth.internal.", dns.TypeA)
	q.Question[0].Qclass = dns.ClassCHAOS
	if r := d.Answer(q, 512); r.Rcode != dns.RcodeRefused {
		t.Errorf("class CH: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestServfailBeforeTheFirstView(t *testing.T) {
	d := newDiscovery(t)
	d.Drain("web-0") // marks before any view publish nothing
	for _, name := range []string{"web.berth.internal.", "nope.berth.internal.", "berth.internal."} {
		if r := ask(d, name, dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: %s, want SERVFAIL", name, dns.RcodeToString[r.Rcode])
		}
	}
	d.Update(fleet(webApp(1)))
	if r := ask(d, "web.berth.internal.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("after the first view, web-0 drained: %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

func TestNamesAreCaseInsensitive(t *testing.T) {
	d, err := discovery.New(discovery.Config{Zone: "Berth.Internal.", TTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if d.Zone() != "berth.internal" || d.TTL() != 2*time.Second {
		t.Errorf("zone %q TTL %s, want berth.internal and 2s (whole seconds, rounded up)", d.Zone(), d.TTL())
	}
	d.Update(fleet(webApp(1)))
	r := ask(d, "WeB.bErTh.INTERNAL.", dns.TypeA)
	if got := addrs(r.Answer); !slices.Equal(got, []string{"10.0.0.10"}) {
		t.Fatalf("mixed case: %v", got)
	}
	// Resolvers that randomise the case (0x20) check it comes back as sent.
	if r.Question[0].Name != "WeB.bErTh.INTERNAL." || r.Answer[0].Header().Name != "WeB.bErTh.INTERNAL." {
		t.Errorf("question %q, answer %q: want the name as asked", r.Question[0].Name, r.Answer[0].Header().Name)
	}
	if srv := ask(d, "_HTTP._Tcp.Web.Berth.Internal.", dns.TypeSRV); len(srv.Answer) != 1 {
		t.Errorf("SRV in mixed case: %v", srv.Answer)
	}
}

func TestOddQueries(t *testing.T) {
	d := newDiscovery(t)
	d.Update(fleet(webApp(1)))
	q := new(dns.Msg)
	q.SetQuestion("web.berth.internal.", dns.TypeA)
	q.Opcode = dns.OpcodeNotify
	if r := d.Answer(q, 512); r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %s", dns.RcodeToString[r.Rcode])
	}
	q = new(dns.Msg)
	q.SetQuestion("web.berth.internal.", dns.TypeA)
	q.SetEdns0(4096, false)
	q.IsEdns0().SetVersion(1)
	if r := d.Answer(q, 512); r.Rcode != dns.RcodeBadVers || r.IsEdns0() == nil {
		t.Errorf("EDNS version 1: %s", dns.RcodeToString[r.Rcode])
	}
	q = new(dns.Msg)
	q.Id = 7
	if r := d.Answer(q, 512); r.Rcode != dns.RcodeFormatError {
		t.Errorf("no question: %s", dns.RcodeToString[r.Rcode])
	}
	if r := ask(d, "web.berth.internal.", dns.TypeANY); len(r.Answer) != 1 {
		t.Errorf("ANY: %v", r.Answer)
	}
}

func TestLargeAnswersAreTruncatedOverUDP(t *testing.T) {
	d := newDiscovery(t)
	d.Update(fleet(webApp(100)))
	addr := serveDNS(t, d)
	udp := exchange(t, "udp", addr, "_http._tcp.web.berth.internal.", dns.TypeSRV)
	if !udp.Truncated {
		t.Errorf("100 SRV records over UDP in 512 bytes: not truncated (%d answers)", len(udp.Answer))
	}
	tcp := exchange(t, "tcp", addr, "_http._tcp.web.berth.internal.", dns.TypeSRV)
	if tcp.Truncated || len(tcp.Answer) != 100 || len(tcp.Extra) != 100 {
		t.Errorf("over TCP: truncated %v, %d answers, %d additional", tcp.Truncated, len(tcp.Answer), len(tcp.Extra))
	}
	if a := exchange(t, "tcp", addr, "web.berth.internal.", dns.TypeA); len(a.Answer) != 100 {
		t.Errorf("A over TCP: %d", len(a.Answer))
	}
}

func TestServesUDPAndTCPOnOneAddress(t *testing.T) {
	d := newDiscovery(t)
	addr := serveDNS(t, d)
	for _, network := range []string{"udp", "tcp"} {
		if r := exchange(t, network, addr, "web.berth.internal.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s before a view: %s", network, dns.RcodeToString[r.Rcode])
		}
	}
	d.Update(fleet(webApp(1)))
	for _, network := range []string{"udp", "tcp"} {
		if got := addrs(exchange(t, network, addr, "web.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, []string{"10.0.0.10"}) {
			t.Errorf("%s: %v", network, got)
		}
	}
}

func TestMalformedPacketsLeaveTheServerAnswering(t *testing.T) {
	d := newDiscovery(t)
	d.Update(fleet(webApp(1)))
	addr := serveDNS(t, d)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	valid := new(dns.Msg)
	valid.SetQuestion("web.berth.internal.", dns.TypeA)
	wire, err := valid.Pack()
	if err != nil {
		t.Fatal(err)
	}
	junk := [][]byte{
		{},
		{0},
		[]byte("hello, not dns"),
		make([]byte, 12),   // a header, zero questions
		wire[:len(wire)-3], // cut short
		append(wire[:12:12], 0xc0, 0x0c, 0, 1, 0, 1),                                  // a name that points at itself
		func() []byte { b := append([]byte(nil), wire...); b[2] |= 0x80; return b }(), // a response
		func() []byte { b := append([]byte(nil), wire...); b[5] = 9; return b }(),     // 9 questions, 1 present
		bytesOf(0xff, 600), // longer than the UDP buffer
	}
	for i := range 200 { // and pseudo-random garbage
		junk = append(junk, pseudoRandom(i, 1+i%300))
	}
	for _, b := range junk {
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// A header that parses but a question section that does not: FORMERR.
	for _, b := range [][]byte{make([]byte, 12), junk[7]} {
		if r := rawExchange(t, addr, b); r == nil || r.Rcode != dns.RcodeFormatError {
			t.Errorf("% x: answered %v, want FORMERR", b[:12], r)
		}
	}
	// Whatever came back for the rest (FORMERR or nothing), the server
	// still answers a good query, over UDP and TCP.
	for _, network := range []string{"udp", "tcp"} {
		if got := addrs(exchange(t, network, addr, "web.berth.internal.", dns.TypeA).Answer); !slices.Equal(got, []string{"10.0.0.10"}) {
			t.Errorf("%s after the junk: %v", network, got)
		}
	}
	// Junk over TCP: a length prefix promising more than comes, then a
	// close; the server drops the connection and goes on.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = tc.Write([]byte{0x40, 0x00, 1, 2, 3})
	_ = tc.Close()
	if got := addrs(exchange(t, "tcp", addr, "web.berth.internal.", dns.TypeA).Answer); len(got) != 1 {
		t.Errorf("tcp after a broken connection: %v", got)
	}
}

// rawExchange sends b over UDP and returns the parsed reply, nil when
// none came within a second.
func rawExchange(t *testing.T, addr string, b []byte) *dns.Msg {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return nil
	}
	r := new(dns.Msg)
	if err := r.Unpack(buf[:n]); err != nil {
		t.Errorf("reply to junk does not parse: %v", err)
		return nil
	}
	return r
}

func bytesOf(b byte, n int) []byte {
	out := make([]byte, n)
	for i := range out {
		out[i] = b
	}
	return out
}

// pseudoRandom is n reproducible bytes.
func pseudoRandom(seed, n int) []byte {
	out := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range out {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[i] = byte(x)
	}
	return out
}

// TestQueryFlood sends a bounded flood over UDP from 4 goroutines: every
// query must be answered correctly. Queries per second are logged, never
// asserted.
func TestQueryFlood(t *testing.T) {
	const queries, workers = 20000, 4
	d := newDiscovery(t)
	d.Update(fleet(webApp(3)))
	addr := serveDNS(t, d)
	var failed, answered atomic.Int64
	var firstErr sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			conn, err := c.Dial(addr)
			if err != nil {
				failed.Add(int64(queries / workers))
				return
			}
			defer conn.Close()
			names := []string{"web.berth.internal.", "web-1.web.berth.internal.", "_http._tcp.web.berth.internal."}
			for i := range queries / workers {
				q := new(dns.Msg)
				name := names[(w+i)%len(names)]
				qtype := dns.TypeA
				if name[0] == '_' {
					qtype = dns.TypeSRV
				}
				q.SetQuestion(name, qtype)
				r, _, err := c.ExchangeWithConn(q, conn)
				if err == nil && (r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0) {
					err = errRcode(r.Rcode)
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { t.Logf("first failure: %s: %v", name, err) })
					continue
				}
				answered.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("flood not over after 2m: %d answered", answered.Load())
	}
	took := time.Since(start)
	t.Logf("flood: %d queries over UDP from %d goroutines, %d answered, %d failed, in %s: %.0f queries/s",
		queries, workers, answered.Load(), failed.Load(), took.Round(time.Millisecond), float64(answered.Load())/took.Seconds())
	if failed.Load() != 0 {
		t.Errorf("%d of %d queries failed", failed.Load(), queries)
	}
	// And it still answers.
	if got := addrs(exchange(t, "udp", addr, "web.berth.internal.", dns.TypeA).Answer); len(got) != 3 {
		t.Errorf("after the flood: %v", got)
	}
}

type errRcode int

func (e errRcode) Error() string { return "rcode " + dns.RcodeToString[int(e)] + " or no answer" }

func TestListenDNSRefusesABadAddress(t *testing.T) {
	d := newDiscovery(t)
	if _, err := d.ListenDNS("no-port"); err == nil {
		t.Error("no port: no error")
	}
	addr := serveDNS(t, d)
	if _, err := d.ListenDNS(addr); err == nil {
		t.Error("a port in use: no error")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []discovery.Config{
		{Zone: "."}, {Zone: "bad zone"}, {Zone: "a..b"}, {Zone: "*.x"}, {TTL: 2 * time.Hour},
		{Zone: "a\x00b.x"}, {Zone: "ü.x"}, {Zone: "-x.y"}, {Zone: "x_y.z"}, {Zone: "com"},
		{Zone: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".x"},
	} {
		if _, err := discovery.New(cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
	d, err := discovery.New(discovery.Config{TTL: -1})
	if err != nil || d.TTL() != 0 {
		t.Errorf("negative TTL: %v, %s; want a TTL of 0", err, d.TTL())
	}
}
