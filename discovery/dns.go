package discovery

import (
	"net"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// node is what one name in the zone holds. A name with neither records
// exists all the same (the apex, an app with no ready replica, the
// _tcp.<app> between an app and its SRV names): it is answered NOERROR
// with no data, never NXDOMAIN, which would tell resolvers nothing exists
// below it (RFC 8020).
type node struct {
	a   []netip.Addr
	srv []srvRecord
}

type srvRecord struct {
	target string // canonical FQDN of the replica: <instance>.<app>.<zone>.
	port   uint16
	addr   netip.Addr
}

// Record parameters. SRV clients pick among equal priorities by weight:
// all replicas are equal.
const (
	srvPriority = 10
	srvWeight   = 10
	// maxUDPSize caps the EDNS(0) size of UDP answers (the DNS flag day
	// 2020 value): larger answers are truncated and retried over TCP
	// rather than fragmented.
	maxUDPSize = 1232
)

// index builds the DNS names of s. Names are stored in lower case with the
// trailing dot; a replica or app whose name is not a DNS label is left out.
func (s *Snapshot) index(zone string, ttl uint32) {
	s.zone, s.ttl = zone, ttl
	s.names = map[string]*node{zone: {}}
	for _, a := range s.Apps {
		app := strings.ToLower(a.Name)
		if !isLabel(app) {
			continue
		}
		appName := app + "." + zone
		appNode := s.ensure(appName)
		var ready []srvRecord
		for _, r := range a.Replicas {
			inst := strings.ToLower(r.Instance)
			if !isLabel(inst) {
				continue
			}
			instName := inst + "." + appName
			n := s.ensure(instName)
			if !r.addr.IsValid() {
				continue
			}
			n.a = append(n.a, r.addr)
			if r.Ready {
				appNode.a = append(appNode.a, r.addr)
				ready = append(ready, srvRecord{target: instName, addr: r.addr})
			}
		}
		for _, p := range a.ports {
			if !isLabel(p.Name) || !isLabel(p.Protocol) || p.Port < 1 || p.Port > 65535 {
				continue
			}
			n := s.ensure("_" + p.Name + "._" + p.Protocol + "." + appName)
			for _, r := range ready {
				r.port = uint16(p.Port)
				n.srv = append(n.srv, r)
			}
		}
	}
}

// ensure returns the node of name, creating it and the names between it
// and the zone.
func (s *Snapshot) ensure(name string) *node {
	n := s.names[name]
	if n == nil {
		n = &node{}
		s.names[name] = n
		if _, parent, ok := strings.Cut(name, "."); ok && len(parent) > len(s.zone) {
			s.ensure(parent)
		}
	}
	return n
}

// isLabel reports whether s is a label berth puts in a name: 1 to 63
// lower-case letters, digits and hyphens.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ServeDNS answers one query from the current snapshot (dns.Handler). It
// never blocks on anything but writing the answer.
func (d *Discovery) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	size := dns.MinMsgSize
	if _, tcp := w.LocalAddr().(*net.TCPAddr); tcp {
		size = dns.MaxMsgSize
	} else if opt := r.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
	}
	_ = w.WriteMsg(d.Answer(r, size))
}

// Answer is the reply to r, at most size bytes long (larger answers are
// truncated, with TC set): the whole DNS logic, without the network.
//
//   - a query outside the zone, or of a class other than IN: REFUSED;
//   - no view yet: SERVFAIL;
//   - a name the zone does not hold: NXDOMAIN, with the SOA;
//   - a name it holds, with no record of the type asked: NOERROR, no
//     answer, with the SOA (NODATA);
//   - an opcode other than QUERY: NOTIMP; EDNS other than version 0: BADVERS.
//
// Names match case-insensitively; the question is echoed as asked.
func (d *Discovery) Answer(r *dns.Msg, size int) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(maxUDPSize, false)
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			return m
		}
	}
	switch {
	case r.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return m
	case len(r.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY || !dns.IsSubDomain(d.zone, name) {
		m.Rcode = dns.RcodeRefused
		return m
	}
	s := d.snap.Load()
	if s == nil {
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	m.Authoritative = true
	n := s.names[name]
	if n == nil {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{s.soa()}
		return m
	}
	if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
		m.Answer = append(m.Answer, s.aRecords(q.Name, n.a, int(d.rotate.Add(1)))...)
	}
	if q.Qtype == dns.TypeSRV || q.Qtype == dns.TypeANY {
		for _, r := range n.srv {
			m.Answer = append(m.Answer, &dns.SRV{
				Hdr:      s.header(q.Name, dns.TypeSRV),
				Priority: srvPriority, Weight: srvWeight, Port: r.port, Target: r.target,
			})
			m.Extra = append(m.Extra, s.aRecords(r.target, []netip.Addr{r.addr}, 0)...)
		}
	}
	if name == s.zone && (q.Qtype == dns.TypeSOA || q.Qtype == dns.TypeANY) {
		soa := s.soa()
		soa.Hdr.Name = q.Name
		m.Answer = append(m.Answer, soa)
	}
	if len(m.Answer) == 0 {
		m.Ns = []dns.RR{s.soa()}
	}
	m.Truncate(size)
	return m
}

// aRecords are the A records of addrs at name, the list turned by rot.
func (s *Snapshot) aRecords(name string, addrs []netip.Addr, rot int) []dns.RR {
	out := make([]dns.RR, len(addrs))
	for i := range addrs {
		ip := addrs[(i+rot)%len(addrs)].As4()
		out[i] = &dns.A{Hdr: s.header(name, dns.TypeA), A: net.IP(ip[:])}
	}
	return out
}

func (s *Snapshot) header(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: s.ttl}
}

// soa is the zone's SOA. Its TTL and minimum are the TTL, so negative
// answers are cached no longer than positive ones (RFC 2308); its serial
// is the view's time.
func (s *Snapshot) soa() *dns.SOA {
	serial := uint32(1)
	if t := s.At.Unix(); t > 0 {
		serial = uint32(t)
	}
	return &dns.SOA{
		Hdr: s.header(s.zone, dns.TypeSOA),
		Ns:  s.zone, Mbox: "hostmaster." + s.zone, Serial: serial,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.ttl,
	}
}
