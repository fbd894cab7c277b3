package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/server"
)

// pageFlags are run's flags for the status page served at "/" on --listen.
type pageFlags struct {
	enabled       bool
	basicAuthFile string
}

func (f *pageFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.BoolVar(&f.enabled, "ui", true, "serve the status page at / on --listen ($BERTH_UI)")
	fl.StringVar(&f.basicAuthFile, "ui-basic-auth-file", "",
		"file of user:<bcrypt hash> lines (htpasswd -nbB USER PASSWORD): the page, its events, status, endpoints and metrics then need one of them, or the sync token as a bearer token ($BERTH_UI_BASIC_AUTH_FILE)")
}

// env gives the page's flags not set on the command line the value of
// their environment variables, as the global flags do.
func (f *pageFlags) env(cmd *cobra.Command) error {
	for _, name := range []string{"ui", "ui-basic-auth-file"} {
		fl := cmd.Flags().Lookup(name)
		v := os.Getenv(envName(name))
		if fl == nil || fl.Changed || v == "" {
			continue
		}
		if err := fl.Value.Set(v); err != nil {
			return fmt.Errorf("$%s: %w", envName(name), err)
		}
	}
	// The flags write where they were registered; f may be a copy.
	f.enabled, _ = cmd.Flags().GetBool("ui")
	f.basicAuthFile, _ = cmd.Flags().GetString("ui-basic-auth-file")
	return nil
}

// page builds the status page over the loop and service discovery, and
// hooks it to the loop beside whatever else listens there (discovery, the
// notifiers). nil when --ui=false.
func (f *pageFlags) page(loop *reconciler.Loop, disc server.Discovery, dns dnsFlags, log *slog.Logger) *server.Page {
	if !f.enabled {
		return nil
	}
	cfg := server.PageConfig{
		Status: func() reconciler.LoopStatus { st, _ := loop.Status().(reconciler.LoopStatus); return st },
		Policy: loop.Policy, Logger: log, Now: loop.Clock.Now,
	}
	if disc != nil {
		cfg.Endpoints = func() (discovery.Endpoints, bool) {
			body, ok := disc.Endpoints()
			eps, isEndpoints := body.(discovery.Endpoints)
			return eps, ok && isEndpoints
		}
		if z, ok := disc.(interface{ Zone() string }); ok && dns.listen != "" {
			cfg.DNSZone = z.Zone()
		}
	}
	p := server.NewPage(cfg)
	loop.OnView = both(loop.OnView, p.View)
	loop.OnEvent = both(loop.OnEvent, p.Event)
	loop.OnRun = both(loop.OnRun, p.Run)
	return p
}

// both calls a, then b; a may be nil.
func both[T any](a, b func(T)) func(T) {
	if a == nil {
		return b
	}
	return func(v T) { a(v); b(v) }
}
