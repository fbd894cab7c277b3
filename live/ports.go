package live

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/spec"
)

// Port checks: a replica whose declared TCP ports (spec.container.ports,
// or spec.system.ports of a system-only app) do not accept connections on
// its address is not ready. berth dials them from where it runs. When the
// address cannot be reached from here (no address, no route, or no answer
// on any port), it says so (plan.Instance.PortsUnchecked) and readiness
// rests on the healthcheck.
const (
	// ProbeTimeout bounds one TCP dial of a port check.
	ProbeTimeout = time.Second
	// probeParallel bounds the dials in flight, all instances together.
	probeParallel = 32
	// AddressWait bounds how long WaitReady waits, once the container is
	// ready, for an instance that has a network interface to get an IPv4
	// address (a DHCP lease) before it gives up checking ports.
	AddressWait = 30 * time.Second
	// portPoll is the pause between two checks in WaitReady.
	portPoll = 500 * time.Millisecond
)

// portsState holds the declared ports Observe checks.
type portsState struct {
	mu    sync.Mutex
	byApp map[string][]spec.Port
	// dial, when set, replaces the network dial (tests).
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// SetPorts tells Observe the ports each app declares, by app name (see
// spec.DeclaredPorts): it then checks the TCP ones on every running
// replica whose app container runs, and records the result in
// plan.Instance.ClosedPorts or PortsUnchecked. The loop and the CLI call
// it with the desired apps before observing; an app not in ports (held,
// removed, or SetPorts never called) is not checked. Safe for concurrent
// use; the map is not kept.
func (s *System) SetPorts(ports map[string][]spec.Port) {
	byApp := make(map[string][]spec.Port, len(ports))
	for app, ps := range ports {
		var tcp []spec.Port
		for _, p := range ps {
			if p.Protocol == spec.ProtocolTCP {
				tcp = append(tcp, p)
			}
		}
		if len(tcp) > 0 {
			byApp[app] = tcp
		}
	}
	s.ports.mu.Lock()
	s.ports.byApp = byApp
	s.ports.mu.Unlock()
}

func (s *System) declaredTCP(app string) []spec.Port {
	s.ports.mu.Lock()
	defer s.ports.mu.Unlock()
	return s.ports.byApp[app]
}

// checkPorts fills ClosedPorts or PortsUnchecked of each owned instance
// whose app declares TCP ports and whose container runs, dialing all of
// them in parallel.
func (s *System) checkPorts(ctx context.Context, insts []plan.Instance) {
	sem := make(chan struct{}, probeParallel)
	var wg sync.WaitGroup
	for i := range insts {
		inst := &insts[i]
		if inst.Config[ownership.KeyOwner] != s.Owner || inst.Status != plan.StatusRunning {
			continue
		}
		// A system-only replica has no container to wait for.
		if !isSystemOnly(inst.Config) && (inst.DockerError != "" || inst.Container == nil || inst.Container.State != "running") {
			continue
		}
		ports := s.declaredTCP(inst.Config[ownership.KeyApp])
		if len(ports) == 0 {
			continue
		}
		if inst.Address() == "" {
			inst.PortsUnchecked = "no IPv4 address"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst.ClosedPorts, inst.PortsUnchecked = s.probePorts(ctx, sem, inst.Address(), ports)
		}()
	}
	wg.Wait()
}

// probeResult is what one dial found.
type probeResult int

const (
	portOpen   probeResult = iota
	portClosed             // refused, or no answer while another port answered
	noRoute                // the address cannot be reached from here
	noAnswer               // the dial timed out
)

// probePorts dials each port on addr, at most cap(sem) at once across
// callers sharing sem. It returns the ports that refused (or, while
// another port answered, did not answer) as "8080/tcp", or why the
// address could not be checked: no route to it, or no answer on any port
// within ProbeTimeout (a firewall, or an address only its host reaches).
func (s *System) probePorts(ctx context.Context, sem chan struct{}, addr string, ports []spec.Port) (closed []string, unchecked string) {
	results := make([]probeResult, len(ports))
	errs := make([]error, len(ports))
	var wg sync.WaitGroup
	for i, p := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i], errs[i] = noAnswer, ctx.Err()
				return
			}
			defer func() { <-sem }()
			results[i], errs[i] = s.probe(ctx, addr, p.Port)
		}()
	}
	wg.Wait()
	answered := false
	for i, r := range results {
		switch r {
		case noRoute:
			return nil, fmt.Sprintf("%s is not reachable from here: %v", addr, errs[i])
		case portOpen, portClosed:
			answered = true
		}
	}
	if !answered {
		return nil, fmt.Sprintf("no answer from %s within %s", addr, ProbeTimeout)
	}
	for i, r := range results {
		if r != portOpen {
			closed = append(closed, ports[i].String())
		}
	}
	return closed, ""
}

// probe dials addr:port once over TCP.
func (s *System) probe(ctx context.Context, addr string, port int) (probeResult, error) {
	dctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	dial := s.ports.dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(dctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err == nil {
		conn.Close()
		return portOpen, nil
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return portClosed, err
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, syscall.ENETDOWN), errors.Is(err, syscall.EADDRNOTAVAIL),
		errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return noRoute, unwrapSyscall(err)
	case dctx.Err() != nil || isTimeout(err):
		return noAnswer, err
	}
	return portClosed, err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// unwrapSyscall keeps the system's words ("no route to host") without the
// dial's "dial tcp 10.0.0.5:8080: connect:" prefix.
func unwrapSyscall(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// waitPorts waits, within timeout, until the app's declared TCP ports
// (spec.AppSpec.AppPorts) accept connections on the instance's address.
// It gives up checking — logs why and returns nil, leaving readiness to
// the healthcheck, or for a system-only app to the instance running — when
// the instance has no network interface, gets no IPv4 address within
// AddressWait, or its address cannot be reached from here.
func (s *System) waitPorts(ctx context.Context, name string, app spec.App, timeout time.Duration) error {
	var ports []spec.Port
	for _, p := range app.Spec.AppPorts() {
		if p.Protocol == spec.ProtocolTCP {
			ports = append(ports, p)
		}
	}
	if len(ports) == 0 {
		return nil
	}
	clk := clock.Or(s.Clock)
	start := clk.Now()
	rests := "readiness rests on the healthcheck"
	if !app.Spec.HasContainer() {
		rests = "a running instance counts as ready"
	}
	unchecked := func(why string) error {
		s.Logger.Info("ports not checked; "+rests, "instance", name, "why", why)
		return nil
	}
	sem := make(chan struct{}, probeParallel)
	last := ""
	for {
		st, err := s.LXD.GetInstanceState(ctx, name)
		if err != nil {
			return fmt.Errorf("read the address of %s: %w", name, err)
		}
		addrs := st.GlobalIPv4()
		switch {
		case len(addrs) > 0:
			closed, why := s.probePorts(ctx, sem, addrs[0], ports)
			if why != "" {
				return unchecked(why)
			}
			if len(closed) == 0 {
				return nil
			}
			last = portsClosedOn(closed, addrs[0])
		case !st.HasNIC():
			return unchecked("no network interface")
		case clk.Since(start) >= min(AddressWait, timeout):
			return unchecked(fmt.Sprintf("no IPv4 address after %s", clk.Since(start).Round(time.Second)))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if clk.Since(start) >= timeout {
			return &engine.NotReadyError{Instance: name, App: app.Metadata.Name,
				Reason: fmt.Sprintf("timed out after %s: %s", app.Spec.Update.HealthTimeout.D(), last)}
		}
		t := clk.NewTimer(portPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}

// portsClosedOn is "port 9999/tcp closed on 10.213.87.14", as the status
// says it.
func portsClosedOn(closed []string, addr string) string {
	if len(closed) == 1 {
		return "port " + closed[0] + " closed on " + addr
	}
	s := "ports "
	for i, p := range closed {
		if i > 0 {
			s += ", "
		}
		s += p
	}
	return s + " closed on " + addr
}
