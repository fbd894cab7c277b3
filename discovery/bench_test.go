package discovery_test

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkDNS measures whole queries over UDP on loopback, as a client
// sees them: 3 ready replicas of web, asked for web.berth.internal A by
// 4 clients per CPU, each waiting for its answer before the next query.
func BenchmarkDNS(b *testing.B) {
	d := newDiscovery(b)
	d.Update(fleet(webApp(3)))
	addr := serveDNS(b, d)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		conn, err := c.Dial(addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		q := new(dns.Msg)
		q.SetQuestion("web.berth.internal.", dns.TypeA)
		for pb.Next() {
			r, _, err := c.ExchangeWithConn(q, conn)
			if err != nil || len(r.Answer) != 3 {
				b.Errorf("%v %v", err, r)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
}

// BenchmarkAnswer measures the lookup alone, without the network: an SRV
// query with its additional records.
func BenchmarkAnswer(b *testing.B) {
	d := newDiscovery(b)
	d.Update(fleet(webApp(3)))
	q := new(dns.Msg)
	q.SetQuestion("_http._tcp.web.berth.internal.", dns.TypeSRV)
	b.ReportAllocs()
	for b.Loop() {
		if r := d.Answer(q, dns.MinMsgSize); len(r.Answer) != 3 {
			b.Fatal(r)
		}
	}
}

// BenchmarkUpdate measures publishing a view of 100 apps of 3 replicas.
func BenchmarkUpdate(b *testing.B) {
	d := newDiscovery(b)
	apps := make([]string, 100)
	for i := range apps {
		apps[i] = "app" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	v := fleet(webApp(3))
	for _, name := range apps {
		a := webApp(3)
		a.Metadata.Name = name
		w := fleet(a)
		v.Desired.Apps = append(v.Desired.Apps, a)
		v.Observed.Instances = append(v.Observed.Instances, w.Observed.Instances...)
	}
	b.ReportAllocs()
	for b.Loop() {
		d.Update(v)
	}
}
