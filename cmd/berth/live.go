package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/lxd"
)

// lxdOptions are the global flags that say where LXD is.
type lxdOptions struct {
	url, cert, key, serverCert string
	project, target            string
	registryAuth               string
	pull                       string
	remotes                    []string
}

func (o *lxdOptions) register(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.url, "lxd", "",
		"LXD to talk to: a unix socket path, https://host:port, or the https URLs of a cluster's members, comma-separated (the first that answers is used; default: the local socket)")
	f.StringVar(&o.cert, "lxd-cert", "", "TLS client certificate (PEM) for an https LXD")
	f.StringVar(&o.key, "lxd-key", "", "TLS client key (PEM) for an https LXD")
	f.StringVar(&o.serverCert, "lxd-server-cert", "",
		"LXD server (or cluster) certificate (PEM) to pin for an https LXD")
	f.StringVar(&o.project, "project", "", "LXD project (default: the server's default project)")
	f.StringVar(&o.target, "target", "", "cluster member or @group for new instances")
	f.StringVar(&o.registryAuth, "registry-auth", "",
		"Docker config.json with registry credentials, read on the berth host")
	o.pull = "if-not-present"
	f.Var(choiceFlag{&o.pull, []string{"if-not-present", "always"}}, "pull",
		"when to pull app images: if-not-present, or always (re-check tags on every create)")
	f.Var(checkedList{p: &o.remotes, check: checkRemote}, "image-remote",
		"NAME=URL of a simplestreams image server for system.image \"NAME:alias\" (repeatable)")
}

// checkRemote checks one --image-remote value when it is set, so that a
// bad $BERTH_IMAGE_REMOTE is refused at start, not when LXD is reached.
func checkRemote(r string) error {
	_, _, err := parseRemote(r)
	return err
}

func parseRemote(r string) (name, url string, err error) {
	name, url, ok := strings.Cut(r, "=")
	if !ok || name == "" || url == "" {
		return "", "", fmt.Errorf("%q: want NAME=URL", r)
	}
	return name, url, nil
}

// connect opens the live system: the LXD client and the Docker engine
// reached through it, deciding by clk.
func (o *lxdOptions) connect(ctx context.Context, owner string, logger *slog.Logger, clk clock.Clock) (*live.System, error) {
	remotes := map[string]string{}
	for _, r := range o.remotes {
		name, url, err := parseRemote(r) // checked when set
		if err != nil {
			return nil, fmt.Errorf("--image-remote %w", err)
		}
		remotes[name] = url
	}
	policy := engine.PullIfNotPresent
	switch o.pull {
	case "if-not-present":
	case "always":
		policy = engine.PullAlways
	default:
		return nil, fmt.Errorf("--pull %q: want if-not-present or always", o.pull)
	}
	c, err := o.client(ctx)
	if err != nil {
		return nil, err
	}
	sys := live.New(c, owner, engine.Options{AuthFile: o.registryAuth, Logger: logger, PullPolicy: policy, Clock: clk})
	sys.Remotes = remotes
	return sys, nil
}

// connect opens the live system for cmd: the owner's, logging as the
// command does, on the command's clock.
func (g *globalOptions) connect(cmd *cobra.Command) (*live.System, error) {
	return g.lxd.connect(cmd.Context(), g.owner, g.logger(cmd), g.clock)
}

// done closes the live system and, with --count-requests, reports how many
// LXD requests the command made.
func (g *globalOptions) done(cmd *cobra.Command, sys *live.System) {
	sys.Close()
	if g.countRequests {
		r := sys.Requests()
		fmt.Fprintf(cmd.ErrOrStderr(), "lxd requests: %d (writes %d, execs %d)\n", r.Total, r.Writes, r.Execs)
	}
}

// client connects to LXD alone.
func (o *lxdOptions) client(ctx context.Context) (*lxd.Client, error) {
	c, err := lxd.Connect(ctx, lxd.Config{
		URL: o.url, ClientCert: o.cert, ClientKey: o.key, ServerCert: o.serverCert,
		Project: o.project, Target: o.target, UserAgent: "berth/" + version,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to LXD: %w", err)
	}
	return c, nil
}
