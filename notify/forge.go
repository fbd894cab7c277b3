package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Forge is a forge whose commit status API berth posts to.
type Forge string

const (
	GitHub Forge = "github"
	GitLab Forge = "gitlab"
	Gitea  Forge = "gitea"
)

// Forges lists the forges berth knows, for flag help and errors.
var Forges = []Forge{GitHub, GitLab, Gitea}

// DefaultAPI is the API base of each public forge; Gitea has none, since
// every Gitea is self-hosted.
var DefaultAPI = map[Forge]string{
	GitHub: "https://api.github.com",
	GitLab: "https://gitlab.com/api/v4",
}

// publicHost is the Git host whose repositories DefaultAPI serves.
var publicHost = map[Forge]string{GitHub: "github.com", GitLab: "gitlab.com"}

// descriptionLimit is the longest description each forge takes: GitHub
// refuses more than 140 characters with a 422; GitLab and Gitea keep 255.
var descriptionLimit = map[Forge]int{GitHub: 140, GitLab: 255, Gitea: 255}

// ParseForge reads a --commit-status value.
func ParseForge(s string) (Forge, error) {
	for _, f := range Forges {
		if string(f) == s {
			return f, nil
		}
	}
	return "", fmt.Errorf("unknown forge %q: want github, gitlab or gitea", s)
}

// CommitStatus posts each run's verdict as a commit status on the revision.
type CommitStatus struct {
	Forge Forge
	// API is the API base: https://api.github.com, https://gitlab.com/api/v4,
	// https://gitea.example/api/v1, or a GitHub Enterprise's /api/v3.
	API string
	// Repo is owner/name on GitHub and Gitea; on GitLab the project's
	// numeric id or its full path (group/subgroup/project).
	Repo string
	// Token returns the API token; it is read for each request, so a
	// token file rotated on disk is picked up.
	Token func() (string, error)
	// Context names berth's status among the commit's other checks
	// ("context" on GitHub and Gitea, "name" on GitLab).
	Context string
	// TargetURL, if set, is the link the forge shows with the status.
	TargetURL string
}

// Check reports a configuration that cannot work.
func (c *CommitStatus) Check() error {
	if _, err := ParseForge(string(c.Forge)); err != nil {
		return err
	}
	u, err := url.Parse(c.API)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("commit status API %q: want an http(s) URL", c.API)
	}
	if c.Forge == GitLab {
		if strings.Trim(c.Repo, "/") == "" {
			return errors.New("commit status: no GitLab project (id or group/project)")
		}
		return nil
	}
	if owner, name, ok := strings.Cut(c.Repo, "/"); !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("commit status repository %q: want owner/name", c.Repo)
	}
	return nil
}

func (c *CommitStatus) url() string { return c.API }

// Name is the target's label in metrics and logs.
func (c *CommitStatus) Name() string { return string(c.Forge) }

// Key makes a status that says nothing new, for the same revision, go
// unposted: a daemon polling every 30s must not post a status each time.
func (c *CommitStatus) Key(o Outcome) string {
	if c.Forge == GitLab && o.State == Pending {
		// GitLab refuses "running" on a status that is running already
		// (400, cannot transition): a new description alone is not posted.
		return o.Revision + "\x00running"
	}
	return o.Revision + "\x00" + c.state(o.State) + "\x00" + c.description(o)
}

// state maps berth's verdict to the forge's words. GitLab has no "error"
// and calls a failure "failed"; a revision still coming up is "running"
// there (its "pending" means "not started").
func (c *CommitStatus) state(s State) string {
	if c.Forge != GitLab {
		return string(s)
	}
	switch s {
	case Success:
		return "success"
	case Pending:
		return "running"
	}
	return "failed"
}

func (c *CommitStatus) description(o Outcome) string {
	return oneLine(o.Description, descriptionLimit[c.Forge])
}

// Request builds the POST of the forge's documented commit status API:
// GitHub POST /repos/{owner}/{repo}/statuses/{sha}, GitLab POST
// /projects/{id}/statuses/{sha}, Gitea POST /repos/{owner}/{repo}/statuses/{sha}.
func (c *CommitStatus) Request(ctx context.Context, o Outcome, _ string) (*http.Request, error) {
	token, err := c.Token()
	if err != nil {
		return nil, err
	}
	var path string
	body := map[string]string{"state": c.state(o.State), "description": c.description(o)}
	if c.TargetURL != "" {
		body["target_url"] = c.TargetURL
	}
	switch c.Forge {
	case GitLab:
		// The project is an id or a URL-encoded path: group%2Fproject.
		path = "/projects/" + url.PathEscape(strings.Trim(c.Repo, "/")) + "/statuses/" + url.PathEscape(o.Revision)
		body["name"] = c.Context
	default:
		owner, name, _ := strings.Cut(c.Repo, "/")
		path = "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(name) + "/statuses/" + url.PathEscape(o.Revision)
		body["context"] = c.Context
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.API, "/")+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	switch c.Forge {
	case GitHub:
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		req.Header.Set("Authorization", "Bearer "+token)
	case GitLab:
		req.Header.Set("PRIVATE-TOKEN", token)
	case Gitea:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Authorization", "token "+token)
	}
	return req, nil
}

// RepoFromRemote derives the forge's repository identity from the URL
// berth clones: https://github.com/owner/name.git,
// git@github.com:owner/name.git, ssh://git@host/group/sub/project.git.
// It says no (ok false) whenever a guess could be wrong: a local path, or
// a GitHub or Gitea path that is not exactly owner/name (a forge served
// under a sub-path).
func RepoFromRemote(f Forge, remote string) (repo string, ok bool) {
	_, path, ok := splitRemote(remote)
	if !ok {
		return "", false
	}
	path = strings.TrimSuffix(strings.Trim(path, "/"), ".git")
	segs := strings.Split(path, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", false
		}
	}
	if f == GitLab && len(segs) < 2 || f != GitLab && len(segs) != 2 {
		return "", false
	}
	return path, true
}

// DefaultAPIFor is the API base to use when none is given: the public
// forge's, unless remote is a URL on another host (a self-hosted forge,
// whose API base berth cannot guess) or the forge has no public instance.
func DefaultAPIFor(f Forge, remote string) (api string, ok bool) {
	if host, _, isURL := splitRemote(remote); isURL && !strings.EqualFold(host, publicHost[f]) {
		return "", false
	}
	api, ok = DefaultAPI[f]
	return api, ok
}

// splitRemote returns the host and path of a remote Git URL, or ok false
// for a local path.
func splitRemote(remote string) (host, path string, ok bool) {
	if strings.Contains(remote, "://") {
		u, err := url.Parse(remote)
		if err != nil || u.Hostname() == "" || u.Scheme == "file" {
			return "", "", false
		}
		return u.Hostname(), u.Path, true
	}
	// scp-like: [user@]host:path, where host has no slash.
	at := strings.LastIndex(remote, "@")
	rest := remote[at+1:]
	host, path, found := strings.Cut(rest, ":")
	if !found || host == "" || strings.Contains(host, "/") || strings.HasPrefix(path, "/") && at < 0 {
		return "", "", false
	}
	if _, err := strconv.Atoi(path); err == nil {
		return "", "", false // host:port without a path
	}
	return host, path, true
}
