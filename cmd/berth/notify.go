package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-gitops/berth/clock"
	"github.com/berth-gitops/berth/notify"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/server"
)

// notifyFlags tell "berth run" where to report each run's outcome: a
// commit status on the forge, and a signed webhook.
type notifyFlags struct {
	commitStatus, commitStatusURL, commitStatusTokenFile string
	commitStatusRepo, commitStatusContext                string
	commitStatusLink                                     string
	notifyURL, notifySecretFile                          string
	timeout                                              time.Duration
}

func (f *notifyFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Var(choiceFlag{&f.commitStatus, []string{"github", "gitlab", "gitea"}}, "commit-status",
		"after each run, post a commit status on the revision: github, gitlab or gitea")
	fl.StringVar(&f.commitStatusURL, "commit-status-url", "",
		"API base of the forge (default https://api.github.com, https://gitlab.com/api/v4; required for gitea and self-hosted forges, e.g. https://git.example.org/api/v1)")
	fl.StringVar(&f.commitStatusTokenFile, "commit-status-token-file", "",
		"file with the API token allowed to set commit statuses (required with --commit-status)")
	fl.StringVar(&f.commitStatusRepo, "commit-status-repo", "",
		"repository on the forge: owner/name, or a GitLab project id or path (default: from --repo's URL)")
	fl.StringVar(&f.commitStatusContext, "commit-status-context", "",
		`the status's name among the commit's checks (default "berth", or "berth/<owner>" with --owner)`)
	fl.StringVar(&f.commitStatusLink, "commit-status-link", "",
		"URL the forge links the status to, e.g. this daemon's status page")
	fl.StringVar(&f.notifyURL, "notify-url", "",
		"after each run, POST its outcome as JSON, signed with HMAC-SHA256 (header X-Berth-Signature), to this URL")
	fl.StringVar(&f.notifySecretFile, "notify-secret-file", "",
		"file with the HMAC key that signs --notify-url deliveries (required with --notify-url)")
	fl.Var(newDurationFlag(&f.timeout, notify.DefaultTimeout, time.Second, 2*time.Minute), "notify-timeout",
		"how long one commit status or webhook request may take, 1s to 2m")
}

// notifier builds the notifier the flags ask for, or nil when they ask
// for none. remote is --repo: the forge's repository is derived from it
// when it is a URL whose shape leaves no doubt.
func (f *notifyFlags) notifier(remote, owner string, clk clock.Clock, metrics *server.Metrics, log *slog.Logger) (*notify.Notifier, error) {
	var targets []notify.Target
	if f.commitStatus == "" {
		for _, fv := range [][2]string{{"commit-status-url", f.commitStatusURL}, {"commit-status-token-file", f.commitStatusTokenFile},
			{"commit-status-repo", f.commitStatusRepo}, {"commit-status-context", f.commitStatusContext}, {"commit-status-link", f.commitStatusLink}} {
			if fv[1] != "" {
				return nil, fmt.Errorf("--%s needs --commit-status", fv[0])
			}
		}
	} else {
		cs, err := f.commitStatusTarget(remote, owner)
		if err != nil {
			return nil, err
		}
		targets = append(targets, cs)
	}
	switch {
	case f.notifyURL != "" && f.notifySecretFile == "":
		return nil, errors.New("--notify-url needs --notify-secret-file: deliveries are always signed")
	case f.notifyURL == "" && f.notifySecretFile != "":
		return nil, errors.New("--notify-secret-file needs --notify-url")
	case f.notifyURL != "":
		wh := &notify.Webhook{URL: f.notifyURL, Secret: func() ([]byte, error) {
			s, err := readSecretFile(f.notifySecretFile, "--notify-secret-file")
			return []byte(s), err
		}}
		if err := wh.Check(); err != nil {
			return nil, fmt.Errorf("--notify-url: %w", err)
		}
		if _, err := wh.Secret(); err != nil {
			return nil, err
		}
		targets = append(targets, wh)
	}
	if len(targets) == 0 {
		return nil, nil
	}
	return &notify.Notifier{
		Targets: targets, Clock: clk, Logger: log.With("component", "notify"), Timeout: f.timeout,
		Metrics: notify.NewMetrics(metrics.Registry()),
	}, nil
}

func (f *notifyFlags) commitStatusTarget(remote, owner string) (*notify.CommitStatus, error) {
	forge, err := notify.ParseForge(f.commitStatus)
	if err != nil {
		return nil, err
	}
	repo, api := f.commitStatusRepo, f.commitStatusURL
	if repo == "" {
		var ok bool
		if repo, ok = notify.RepoFromRemote(forge, remote); !ok {
			return nil, fmt.Errorf("--commit-status %s: cannot tell the repository on the forge from --repo %q; give --commit-status-repo", forge, remote)
		}
	}
	if api == "" {
		var ok bool
		if api, ok = notify.DefaultAPIFor(forge, remote); !ok {
			return nil, fmt.Errorf("--commit-status %s needs --commit-status-url, the API base of the forge (e.g. https://git.example.org/api/v1 for Gitea, https://git.example.org/api/v4 for GitLab)", forge)
		}
	}
	if f.commitStatusTokenFile == "" {
		return nil, fmt.Errorf("--commit-status needs --commit-status-token-file")
	}
	ctx := f.commitStatusContext
	if ctx == "" {
		ctx = "berth"
		if owner != "berth" {
			ctx = "berth/" + owner
		}
	}
	cs := &notify.CommitStatus{
		Forge: forge, API: api, Repo: repo, Context: ctx, TargetURL: f.commitStatusLink,
		Token: func() (string, error) { return readSecretFile(f.commitStatusTokenFile, "--commit-status-token-file") },
	}
	if err := cs.Check(); err != nil {
		return nil, fmt.Errorf("--commit-status: %w", err)
	}
	if _, err := cs.Token(); err != nil {
		return nil, err
	}
	return cs, nil
}

// readSecretFile reads a token or key, without its trailing newline.
func readSecretFile(path, flag string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return s, nil
}

// alsoOnRun chains a loop's OnRun hooks: the status page and the
// notifier both follow runs.
func alsoOnRun(prev, next func(reconciler.RunReport)) func(reconciler.RunReport) {
	if prev == nil {
		return next
	}
	return func(r reconciler.RunReport) {
		prev(r)
		next(r)
	}
}
