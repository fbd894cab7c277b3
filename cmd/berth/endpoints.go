package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/server"
)

// This file is service discovery in the CLI: run's DNS flags and the
// wiring of discovery into the loop and the HTTP server, and the
// "berth endpoints" command that reads a daemon's endpoints.

// dnsFlags are run's service discovery flags.
type dnsFlags struct {
	listen, zone string
	ttl          time.Duration
}

func (f *dnsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "dns-listen", "", `serve the zone over DNS (UDP and TCP) at ADDR:PORT, e.g. 10.213.87.1:8053 ("" = no DNS server)`)
	fl.StringVar(&f.zone, "dns-zone", discovery.DefaultZone, "the DNS zone served: <app>.<zone>, <instance>.<app>.<zone>, _<port>._<proto>.<app>.<zone>")
	fl.Var(newDurationFlag(&f.ttl, discovery.DefaultTTL, 0, discovery.MaxTTL), "dns-ttl",
		"TTL of the DNS answers (rounded up to whole seconds), 0s to 1h; a replica leaves DNS this long plus 1s before berth disrupts it")
}

// check refuses a bad zone before berth connects to anything.
func (f *dnsFlags) check() error {
	_, err := discovery.New(discovery.Config{Zone: f.zone})
	return err
}

// discovery is the daemon's service discovery: it follows the loop's views
// and events, and the executor drains a replica from it before a
// disruptive step, waiting out the DNS TTL plus a second.
//
// The drain delay is the daemon's default; an app's update.drainDelay
// overrides it.
func (f *dnsFlags) discovery(owner string, loop *reconciler.Loop) (*discovery.Discovery, error) {
	ttl := f.ttl
	if ttl == 0 {
		ttl = -1 // discovery.Config: 0 is the default, negative means 0
	}
	d, err := discovery.New(discovery.Config{Owner: owner, Zone: f.zone, TTL: ttl})
	if err != nil {
		return nil, err
	}
	loop.OnView = d.Update
	loop.OnChange = d.Change
	loop.Drainer = d
	loop.DrainDelay = d.TTL() + time.Second
	return d, nil
}

// dnsServer binds --dns-listen and returns the task that serves DNS there;
// nil when --dns-listen is empty.
func (f *dnsFlags) dnsServer(d *discovery.Discovery, log *slog.Logger) (func(context.Context) error, error) {
	if f.listen == "" {
		return nil, nil
	}
	srv, err := d.ListenDNS(f.listen)
	if err != nil {
		return nil, err
	}
	log.Info("dns listening", "addr", srv.Addr().String(), "zone", d.Zone(), "ttl", d.TTL())
	return srv.Serve, nil
}

func newEndpointsCmd() *cobra.Command {
	var output, srv string
	cmd := &cobra.Command{
		Use:   "endpoints",
		Short: "Show each app's replicas: address, ports, readiness, revision, member",
		Long: `Endpoints asks a running "berth run" (GET URL/api/v1/endpoints) where each
app's replicas are: address, ports, whether they are ready (and why not), the
revision they run and the cluster member they are on. A ready replica is one
that is answered in DNS as <app>.<zone>.`,
		Example: `  berth endpoints
  berth endpoints --server http://127.0.0.1:9090 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			body, err := getFromServer(cmd.Context(), serverGet{base: srv, path: "/api/v1/endpoints"})
			if err != nil {
				return err
			}
			if output == "json" {
				_, err = cmd.OutOrStdout().Write(body)
				return err
			}
			var e discovery.Endpoints
			if err := json.Unmarshal(body, &e); err != nil {
				return fmt.Errorf("%s: not berth endpoints: %w", srv, err)
			}
			return writeEndpoints(cmd.OutOrStdout(), sanitized(e))
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().StringVar(&srv, "server", "http://"+server.DefaultListen, "URL of a running berth run")
	return cmd
}

// serverGet is one GET of a running daemon's HTTP API.
type serverGet struct {
	base, path string
	// tokenFile holds a bearer token to send ("" sends none).
	tokenFile string
	// limit is the largest body accepted (default 16 MiB), timeout the
	// bound of the whole request (default 10s).
	limit   int64
	timeout time.Duration
}

// getFromServer GETs a path of a daemon's HTTP server and returns the body
// of a 200 answer; another answer is an error that says what the daemon
// said.
func getFromServer(ctx context.Context, g serverGet) ([]byte, error) {
	limit, timeout := cmp.Or(g.limit, 16<<20), cmp.Or(g.timeout, 10*time.Second)
	where := safeText(strings.TrimRight(g.base, "/") + g.path)
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(g.base, "/")+g.path, nil)
	if err != nil {
		return nil, err
	}
	if g.tokenFile != "" {
		tok, err := readServerToken(g.tokenFile)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	client := &http.Client{Timeout: timeout, CheckRedirect: sameServer}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			msg += ": " + safeText(e.Error)
		} else if text := strings.TrimSpace(string(body)); text != "" && len(text) < 1024 {
			msg += ": " + safeText(text)
		}
		return nil, fmt.Errorf("%s: %s", where, msg)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s: the answer is larger than %d MiB", where, limit>>20)
	}
	return body, nil
}

// maxTokenSize bounds a token file: a token is one short line, and a
// file such as /dev/zero must not be read for ever.
const maxTokenSize = 64 << 10

// readServerToken reads the daemon's sync token from --server-token-file.
func readServerToken(path string) (string, error) {
	where := "--server-token-file " + safeText(path)
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--server-token-file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxTokenSize+1))
	if err != nil {
		return "", fmt.Errorf("%s: %w", where, err)
	}
	if len(b) > maxTokenSize {
		return "", fmt.Errorf("%s: larger than %d KiB; it must hold only the daemon's sync token", where, maxTokenSize>>10)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", fmt.Errorf("%s is empty; it must hold the daemon's sync token", where)
	case strings.ContainsFunc(tok, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return "", fmt.Errorf("%s holds control characters or several lines; it must hold only the daemon's sync token", where)
	}
	return tok, nil
}

// sameServer is the CheckRedirect of requests to a daemon. Go's client
// forwards the Authorization header on a redirect to the same host name
// whatever the port, so whoever listens on another port of the daemon's
// host would receive the token: a redirect that changes scheme, host or
// port is refused instead of followed.
func sameServer(req *http.Request, via []*http.Request) error {
	from, to := origin(via[0].URL), origin(req.URL)
	if !strings.EqualFold(from, to) {
		return fmt.Errorf("refused a redirect from %s to %s: the daemon's token goes only to the daemon (give --server the URL it redirects to, if that is the daemon)", safeText(from), safeText(to))
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// origin is scheme://host:port of u, the port filled in from the scheme.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(u.Hostname(), port)
}

// writeEndpoints prints the endpoints as a table, one replica a line. e
// must be sanitized.
func writeEndpoints(w io.Writer, e discovery.Endpoints) error {
	fmt.Fprintf(w, "Revision %s, observed %s, zone %s\n\n", orDash(plan.ShortSHA(e.Revision)), e.ObservedAt.Format(time.RFC3339), e.Zone)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tINSTANCE\tADDRESS\tPORTS\tREVISION\tMEMBER\tREADY")
	for _, a := range e.Apps {
		if len(a.Replicas) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\n", a.Name)
		}
		for _, r := range a.Replicas {
			ports := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				ports[i] = fmt.Sprintf("%s %d/%s", p.Name, p.Port, p.Protocol)
			}
			ready := "yes"
			if !r.Ready {
				ready = "no"
				if r.Reason != "" {
					ready += ": " + r.Reason
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, r.Instance, orDash(r.Address),
				orDash(strings.Join(ports, ", ")), orDash(plan.ShortSHA(r.Revision)), orDash(r.Member), ready)
		}
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
