package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/miekg/dns"
)

// DNSServer serves a Discovery's zone over UDP and TCP on one address.
type DNSServer struct {
	udp, tcp *dns.Server
	addr     net.Addr
}

// shutdownTimeout bounds how long Serve waits for queries in flight.
const shutdownTimeout = 2 * time.Second

// ListenDNS binds addr ("127.0.0.1:8053"; port 0 picks one, the same for
// UDP and TCP) for the DNS server; Serve serves it. Binding first lets the
// daemon fail at startup when the port is taken.
func (d *Discovery) ListenDNS(addr string) (*DNSServer, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	// With port 0 the kernel picks the UDP port, which TCP may find taken:
	// try a few picks.
	tries := 1
	if port == "0" {
		tries = 5
	}
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		udpAddr := pc.LocalAddr().(*net.UDPAddr)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(udpAddr.Port)))
		if err != nil {
			_ = pc.Close()
			if i+1 < tries {
				continue
			}
			return nil, fmt.Errorf("dns: %w", err)
		}
		return &DNSServer{
			udp:  &dns.Server{PacketConn: pc, Handler: d, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second},
			tcp:  &dns.Server{Listener: ln, Handler: d, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxTCPQueries: 1000},
			addr: udpAddr,
		}, nil
	}
}

// Addr is the address the server listens on (UDP and TCP).
func (s *DNSServer) Addr() net.Addr { return s.addr }

// Serve answers queries until ctx ends, then shuts down and returns nil;
// it returns an error if a listener fails before that. A DNSServer serves
// once.
func (s *DNSServer) Serve(ctx context.Context) error {
	servers := []*dns.Server{s.udp, s.tcp}
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.ActivateAndServe() }()
	}
	running := len(servers)
	var err error
	select {
	case err = <-errc:
		// A listener broke before the end: stop the other one too.
		running--
		if err == nil {
			err = errors.New("stopped")
		}
		err = fmt.Errorf("dns: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	for _, srv := range servers {
		if srv.ShutdownContext(sctx) != nil {
			// Not started yet (or stopped already): closing its socket
			// makes it return as soon as it starts.
			s.closeSocket(srv)
		}
	}
	for ; running > 0; running-- {
		<-errc
	}
	return err
}

func (s *DNSServer) closeSocket(srv *dns.Server) {
	if srv.PacketConn != nil {
		_ = srv.PacketConn.Close()
	}
	if srv.Listener != nil {
		_ = srv.Listener.Close()
	}
}
