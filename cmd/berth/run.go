package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/live"
	"github.com/berth-gitops/berth/lxd"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/server"
	"github.com/berth-gitops/berth/source"
)

type runFlags struct {
	repo, branch, cacheDir                   string
	interval, leaseTTL, drain                time.Duration
	listen, webhookSecretFile, syncTokenFile string
	gitUsername, gitPasswordFile             string
	sshKey, sshKeyPassphraseFile, knownHosts string
	verifySignatures                         bool
	keyring                                  string
	watchWorktree                            bool
	dns                                      dnsFlags
	ui                                       pageFlags
	// selfHeal repairs drift of the applied revision; events follows
	// LXD's and Docker's event streams; resync bounds how long an idle
	// daemon goes without a full observe.
	selfHeal, events bool
	resync           time.Duration
	notify           notifyFlags
}

func newRunCmd(g *globalOptions) *cobra.Command {
	var (
		f  runFlags
		sf specFlags
		pf pruneFlags
	)
	cmd := &cobra.Command{
		Use:   "run --repo URL|PATH",
		Short: "Run the reconciler: watch the config repo and converge continuously",
		Long: `Run keeps LXD converged to a branch of a config repository. It is
level-triggered: the poll timer, webhooks (POST /hooks/github|gitlab|gitea),
file changes (when --repo is a local path) and POST /api/v1/sync only ask for a
run, and every run observes everything.

Each poll is one cheap head check; berth fetches only when the head moved. A
rollout that fails for an app is not retried in a hot loop: that revision is
held for the app with a growing backoff, and a newer commit resets it. One
reconciler acts per owner: a lease kept in LXD makes a second "berth run" wait.

HTTP on --listen: the status page at / (--ui), /healthz, /readyz, /metrics
(Prometheus), /api/v1/status, /api/v1/events, /api/v1/endpoints,
/api/v1/sd/prometheus, POST /api/v1/sync, /hooks/*.
SIGINT/SIGTERM stop new work, let running steps finish (--drain), release the
lease and exit 0.

Service discovery: with --dns-listen, berth answers the zone (--dns-zone,
default berth.internal) over DNS: <app>.<zone> holds the ready replicas only,
<instance>.<app>.<zone> each replica, _<port>._<proto>.<app>.<zone> SRV records.
Before a replica is disrupted it leaves the answers, and berth waits the TTL
(--dns-ttl) plus 1s; it is back once it is ready again.

Outcomes: --commit-status github|gitlab|gitea posts each run's verdict on
the revision (success only when every app converged), and --notify-url
POSTs it as JSON signed with HMAC-SHA256; both are retried in the
background and never hold up a run.

Secrets never go in flags: --git-password-file (or $BERTH_GIT_PASSWORD),
--webhook-secret-file, --sync-token-file, --commit-status-token-file,
--notify-secret-file.`,
		Example: `  berth run --repo https://git.example.org/ops/apps.git --branch main --dir apps \
    --git-password-file /etc/berth/git-token --webhook-secret-file /etc/berth/webhook-secret
  berth run --repo ~/src/apps --watch-worktree --interval 1m   # local development loop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDaemon(cmd, g, f, sf, pf)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.repo, "repo", "", "config repository: URL or local path (required)")
	fl.StringVar(&f.branch, "branch", "main", "branch to follow")
	fl.StringVar(&f.cacheDir, "cache-dir", "/var/cache/berth/git", "where the clone of a remote repository is kept")
	fl.Var(newDurationFlag(&f.interval, 30*time.Second, time.Second, 24*time.Hour), "interval", "poll interval (with ±10% jitter), 1s to 24h")
	fl.StringVar(&f.listen, "listen", server.DefaultListen, `HTTP address for health, metrics, status and webhooks ("" = none)`)
	fl.StringVar(&f.webhookSecretFile, "webhook-secret-file", "", "file with the shared webhook secret (enables /hooks/*)")
	fl.StringVar(&f.syncTokenFile, "sync-token-file", "", "file with a bearer token required by POST /api/v1/sync")
	fl.StringVar(&f.gitUsername, "git-username", "", "HTTPS user name (with --git-password-file or $BERTH_GIT_PASSWORD)")
	fl.StringVar(&f.gitPasswordFile, "git-password-file", "", "file with the HTTPS password or token")
	fl.StringVar(&f.sshKey, "ssh-key", "", "SSH private key for ssh:// and git@host: URLs")
	fl.StringVar(&f.sshKeyPassphraseFile, "ssh-key-passphrase-file", "", "file with the SSH key's passphrase")
	fl.StringVar(&f.knownHosts, "known-hosts", "", "pinned SSH host keys (required for SSH; a changed key is an error)")
	fl.BoolVar(&f.verifySignatures, "verify-signatures", false, "apply only commits signed by a key in --keyring")
	fl.StringVar(&f.keyring, "keyring", "", "armored OpenPGP public keys for --verify-signatures")
	fl.BoolVar(&f.watchWorktree, "watch-worktree", false, "local --repo: converge the files as saved, uncommitted edits included")
	fl.Var(newDurationFlag(&f.leaseTTL, 90*time.Second, 3*time.Second, time.Hour), "lease-ttl", "how long the lease lasts without renewal, 3s to 1h")
	fl.Var(newDurationFlag(&f.drain, 2*time.Minute, time.Second, time.Hour), "drain", "on shutdown, how long running steps may go on, 1s to 1h")
	fl.BoolVar(&f.selfHeal, "self-heal", true, "repair drift of the revision already applied; false only reports it (status, metrics, a log line) and writes nothing")
	fl.BoolVar(&f.events, "events", true, "follow LXD's and Docker's event streams: a stopped instance or a dead container triggers a run at once, and an idle poll only checks Git")
	fl.Var(newDurationFlag(&f.resync, 5*time.Minute, 10*time.Second, 24*time.Hour), "resync", "with --events, the longest time between full observes of LXD and Docker, 10s to 24h")
	sf.register(cmd)
	pf.register(cmd)
	f.dns.register(cmd)
	f.notify.register(cmd)
	f.ui.register(cmd)
	_ = cmd.MarkFlagRequired("repo")
	return cmd
}

// runDaemon runs "berth run": it checks the flags, builds the source, the
// live system and the loop, and runs the loop with the HTTP server and the
// repository watch beside it until the context ends.
func runDaemon(cmd *cobra.Command, g *globalOptions, f runFlags, sf specFlags, pf pruneFlags) error {
	if err := pf.check(); err != nil {
		return err
	}
	if err := f.check(); err != nil {
		return err
	}
	if err := f.ui.env(cmd); err != nil {
		return err
	}
	ctx, log := cmd.Context(), g.logger(cmd)
	metrics := server.NewMetrics()
	notifier, err := f.notify.notifier(f.repo, g.owner, g.clock, metrics, log)
	if err != nil {
		return err
	}
	src, err := f.source(sf.dir, log, metrics)
	if err != nil {
		return err
	}
	sys, err := g.connect(cmd)
	if err != nil {
		return err
	}
	defer sys.Close()
	sys.RecordMembers = true
	sys.OnLXDRequest = func(method, _ string) { metrics.LXDRequest(method) }
	keys, err := g.secretKeys(ctx, func(context.Context) (*lxd.Client, error) { return sys.LXD, nil })
	if err != nil {
		return err
	}
	loop := f.loop(g, sf, pf, src, sys, metrics, log)
	loop.SpecOptions.Secrets = keys
	disc, err := f.dns.discovery(g.owner, loop)
	if err != nil {
		return err
	}
	var tasks []func(context.Context) error
	if notifier != nil {
		loop.OnRun = alsoOnRun(loop.OnRun, notifier.Notify)
		tasks = append(tasks, notifier.Run)
	}
	if f.listen != "" {
		serve, err := f.server(loop, disc, metrics, log)
		if err != nil {
			return err
		}
		tasks = append(tasks, serve)
	}
	if serveDNS, err := f.dns.dnsServer(disc, log); err != nil {
		return err
	} else if serveDNS != nil {
		tasks = append(tasks, serveDNS)
	}
	if !source.IsRemote(f.repo) {
		tasks = append(tasks, f.watch(loop, g.clock, log))
	}
	log.Info("berth run started", "repo", f.repo, "branch", f.branch, "owner", g.owner, "interval", f.interval)
	if err := runBeside(ctx, loop, tasks...); err != nil {
		return err
	}
	log.Info("berth run stopped")
	return nil
}

// check refuses combinations of run's flags that cannot work.
func (f *runFlags) check() error {
	if err := f.dns.check(); err != nil {
		return err
	}
	switch {
	case f.verifySignatures && f.keyring == "":
		return errors.New("--verify-signatures needs --keyring")
	case f.watchWorktree && source.IsRemote(f.repo):
		return errors.New("--watch-worktree needs a local --repo")
	case f.watchWorktree && f.verifySignatures:
		return errors.New("--watch-worktree reads uncommitted files: it cannot be combined with --verify-signatures")
	}
	return nil
}

// source is where the loop reads revisions from: the files as saved with
// --watch-worktree, else the branch of the repository (its commits checked
// with --verify-signatures).
func (f *runFlags) source(dir string, log *slog.Logger, metrics *server.Metrics) (reconciler.Source, error) {
	if f.watchWorktree {
		return worktreeSource{path: f.repo, dir: dir}, nil
	}
	var verifier *source.Verifier
	if f.verifySignatures {
		v, err := source.NewVerifier(f.keyring)
		if err != nil {
			return nil, err
		}
		verifier = v
	}
	gs, err := source.NewGitSource(source.GitOptions{
		URL: f.repo, Branch: f.branch, Dir: dir, CacheDir: f.cacheDir, Verify: verifier, Logger: log,
		Auth: source.Auth{
			Username: f.gitUsername, PasswordFile: f.gitPasswordFile,
			SSHKeyFile: f.sshKey, SSHKeyPassphraseFile: f.sshKeyPassphraseFile, KnownHostsFile: f.knownHosts,
		},
	})
	if err != nil {
		return nil, err
	}
	return &gitSource{gs: gs, metrics: metrics}, nil
}

// loop is the reconciler loop of the daemon, holding the owner's lease,
// initialised, on the daemon's clock.
func (f *runFlags) loop(g *globalOptions, sf specFlags, pf pruneFlags, src reconciler.Source, sys *live.System, metrics *server.Metrics, log *slog.Logger) *reconciler.Loop {
	host, _ := os.Hostname()
	loop := &reconciler.Loop{
		Source: src, System: sys, Policy: pf.policy(g.owner), SpecOptions: sf.options(),
		Interval: f.interval, Drain: f.drain, Metrics: metrics, Logger: log, LeaseRenew: f.leaseTTL / 3,
		Lease: &live.Lease{LXD: sys.LXD, Owner: g.owner, Holder: live.HolderID("run", host, os.Getpid()), TTL: f.leaseTTL, Clock: g.clock},
		Clock: g.clock, ReportOnly: !f.selfHeal, Resync: f.resync, Endpoint: sys.LXD.Endpoint,
	}
	metrics.LXDEndpoint(sys.LXD.Endpoint)
	if f.events {
		loop.Watcher = sys
	}
	loop.Init()
	return loop
}

// server starts listening on --listen and returns the task that serves
// HTTP there: health, metrics, status, endpoints, sync and webhooks.
func (f *runFlags) server(loop *reconciler.Loop, disc server.Discovery, metrics *server.Metrics, log *slog.Logger) (func(context.Context) error, error) {
	srv, err := server.New(server.Config{
		Listen: f.listen, Branch: f.branch, Logger: log, Discovery: disc,
		WebhookSecretFile: f.webhookSecretFile, SyncTokenFile: f.syncTokenFile,
		Page: f.ui.page(loop, disc, f.dns, log), BasicAuthFile: f.ui.basicAuthFile,
	}, loop, metrics)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	log.Info("listening", "addr", srv.Addr().String())
	return func(ctx context.Context) error {
		if err := srv.Serve(ctx); err != nil {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	}, nil
}

// watch is the task that asks the loop for a run when a commit lands in the
// local repository (or, with --watch-worktree, a file is saved). A watch
// that fails leaves the daemon polling.
func (f *runFlags) watch(loop *reconciler.Loop, clk clock.Clock, log *slog.Logger) func(context.Context) error {
	reason := "fsnotify"
	if f.watchWorktree {
		reason = "worktree"
	}
	opts := source.WatchOptions{
		Worktree: f.watchWorktree, Debounce: source.DefaultDebounce, Clock: clk,
		OnError: func(err error) {
			log.Warn("folder not watched; its changes wait for the next poll", "err", err)
		},
	}
	return func(ctx context.Context) error {
		err := source.WatchRepoWith(ctx, f.repo, opts, func(string) { loop.Trigger(reason) })
		if err != nil && ctx.Err() == nil {
			log.Warn("watching the repository failed; polling only", "err", err)
		}
		return nil
	}
}

// runBeside runs the loop until ctx ends, with tasks in goroutines beside
// it, and waits for all of them. It returns the loop's error, else the
// first task's.
func runBeside(ctx context.Context, loop *reconciler.Loop, tasks ...func(context.Context) error) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(tasks))
	for _, task := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := task(ctx); err != nil {
				errc <- err
			}
		}()
	}
	runErr := loop.Run(ctx)
	wg.Wait()
	close(errc)
	if runErr != nil {
		return runErr
	}
	return <-errc // nil when no task failed
}

// gitSource adapts source.GitSource to the loop. With signature checks, a
// head that does not verify is not applied: the last verified revision is
// used instead, with a warning for the status.
type gitSource struct {
	gs      *source.GitSource
	metrics *server.Metrics
	mu      sync.Mutex
	last    *reconciler.Revision
}

func (s *gitSource) Fetch(ctx context.Context) (reconciler.Revision, error) {
	snap, fetched, err := s.gs.Sync(ctx)
	s.metrics.GitPolled()
	if fetched {
		s.metrics.GitFetched()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var unverified *source.UnverifiedError
	if errors.As(err, &unverified) {
		if s.last == nil {
			return reconciler.Revision{}, fmt.Errorf("no verified revision yet: %w", err)
		}
		rev := *s.last
		rev.Warning = err.Error()
		return rev, nil
	}
	if err != nil {
		s.metrics.GitError()
		return reconciler.Revision{}, err
	}
	rev := reconciler.Revision{SHA: snap.Commit.SHA, Subject: snap.Commit.Subject, Author: snap.Commit.Author, FS: snap.FS, Files: snap.Files}
	s.last = &rev
	return rev, nil
}

// worktreeSource reads the files as saved: the local development loop.
type worktreeSource struct{ path, dir string }

func (s worktreeSource) Fetch(ctx context.Context) (reconciler.Revision, error) {
	snap, err := source.WorktreeSnapshotContext(ctx, s.path, s.dir)
	if err != nil {
		return reconciler.Revision{}, err
	}
	return reconciler.Revision{SHA: snap.Commit.SHA, Subject: snap.Commit.Subject, Author: snap.Commit.Author, FS: snap.FS, Files: snap.Files}, nil
}
