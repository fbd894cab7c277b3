package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func sign(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

func githubHeaders(event string, body []byte, secret string) map[string]string {
	return map[string]string{
		"X-GitHub-Event":      event,
		"X-GitHub-Delivery":   "d-1",
		"Content-Type":        "application/json",
		"X-Hub-Signature-256": "sha256=" + sign(body, secret),
	}
}

const (
	pushMain  = `{"ref":"refs/heads/main","before":"0000","after":"abc","repository":{"full_name":"o/r"}}`
	pushOther = `{"ref":"refs/heads/feature","after":"def"}`
	pushTag   = `{"ref":"refs/tags/v1.0.0","after":"abc"}`
)

// webhookCase is one delivery and what berth must make of it.
type webhookCase struct {
	name    string
	path    string
	body    string
	header  map[string]string
	code    int
	trigger string // the reason expected, "" for no trigger
	result  string // berth_webhooks_total result label expected
	inBody  string // substring expected in the response
}

func runWebhookCases(t *testing.T, cases []webhookCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, false)
			r := f.do(t, "POST", tc.path, []byte(tc.body), tc.header)
			if r.code != tc.code {
				t.Fatalf("code = %d, want %d (%q)", r.code, tc.code, r.body)
			}
			got := f.backend.triggered()
			switch {
			case tc.trigger == "" && len(got) != 0:
				t.Fatalf("triggered %q, want nothing", got)
			case tc.trigger != "" && (len(got) != 1 || got[0] != tc.trigger):
				t.Fatalf("triggers = %q, want exactly [%s]", got, tc.trigger)
			}
			if tc.inBody != "" && !strings.Contains(r.body, tc.inBody) {
				t.Errorf("body = %q, want it to contain %q", r.body, tc.inBody)
			}
			provider := strings.TrimPrefix(tc.path, "/hooks/")
			if n := testutil.ToFloat64(f.metrics.webhooks.WithLabelValues(provider, tc.result)); n != 1 {
				t.Errorf("berth_webhooks_total{provider=%q,result=%q} = %v, want 1", provider, tc.result, n)
			}
			logs := f.logs.String()
			for _, leak := range []string{testSecret, tc.header["X-Hub-Signature-256"], tc.header["X-Gitea-Signature"], tc.body} {
				// Short bodies like "{}" could match by chance.
				if len(leak) > 8 && strings.Contains(logs, leak) {
					t.Errorf("logs contain %q:\n%s", leak, logs)
				}
			}
		})
	}
}

func TestGitHubWebhook(t *testing.T) {
	gh := func(event, body string) map[string]string { return githubHeaders(event, []byte(body), testSecret) }
	badSig := gh("push", pushMain)
	badSig["X-Hub-Signature-256"] = "sha256=" + sign([]byte(pushMain), "wrong")
	noSig := gh("push", pushMain)
	delete(noSig, "X-Hub-Signature-256")
	noPrefix := gh("push", pushMain)
	noPrefix["X-Hub-Signature-256"] = sign([]byte(pushMain), testSecret)
	notHex := gh("push", pushMain)
	notHex["X-Hub-Signature-256"] = "sha256=zz"
	form := "payload=" + url.QueryEscape(pushMain)
	formHeaders := gh("push", form)
	formHeaders["Content-Type"] = "application/x-www-form-urlencoded"
	oversized := `{"ref":"refs/heads/main","pad":"` + strings.Repeat("x", maxBodyBytes) + `"}`

	runWebhookCases(t, []webhookCase{
		{"push to followed branch", "/hooks/github", pushMain, gh("push", pushMain), http.StatusAccepted, "webhook:github", webhookTriggered, "triggered"},
		{"form-encoded push", "/hooks/github", form, formHeaders, http.StatusAccepted, "webhook:github", webhookTriggered, ""},
		{"bad signature", "/hooks/github", pushMain, badSig, http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"missing signature", "/hooks/github", pushMain, noSig, http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"signature without sha256= prefix", "/hooks/github", pushMain, noPrefix, http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"signature not hex", "/hooks/github", pushMain, notHex, http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"body altered after signing", "/hooks/github", pushOther, gh("push", pushMain), http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"malformed JSON with bad signature", "/hooks/github", `{"ref":`, badSig, http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"push to other branch", "/hooks/github", pushOther, gh("push", pushOther), http.StatusOK, "", webhookIgnored, "ignored: push to refs/heads/feature"},
		{"tag push", "/hooks/github", pushTag, gh("push", pushTag), http.StatusOK, "", webhookIgnored, "ignored: push to refs/tags/v1.0.0"},
		{"ping", "/hooks/github", `{"zen":"Keep it simple."}`, gh("ping", `{"zen":"Keep it simple."}`), http.StatusOK, "", webhookIgnored, "pong"},
		{"other event", "/hooks/github", `{}`, gh("issues", `{}`), http.StatusOK, "", webhookIgnored, "ignored"},
		{"malformed JSON, valid signature", "/hooks/github", `{"ref":`, gh("push", `{"ref":`), http.StatusBadRequest, "", webhookBadRequest, ""},
		{"push without ref", "/hooks/github", `{}`, gh("push", `{}`), http.StatusBadRequest, "", webhookBadRequest, ""},
		{"missing event header", "/hooks/github", pushMain, gh("", pushMain), http.StatusBadRequest, "", webhookBadRequest, ""},
		{"oversized body", "/hooks/github", oversized, gh("push", oversized), http.StatusRequestEntityTooLarge, "", webhookBadRequest, ""},
	})
}

func TestGitLabWebhook(t *testing.T) {
	gl := func(event, token string) map[string]string {
		return map[string]string{"X-Gitlab-Event": event, "X-Gitlab-Token": token, "Content-Type": "application/json"}
	}
	systemPush := `{"event_name":"push","ref":"refs/heads/main"}`
	systemOther := `{"event_name":"project_create","name":"x"}`
	runWebhookCases(t, []webhookCase{
		{"push with right token", "/hooks/gitlab", pushMain, gl("Push Hook", testSecret), http.StatusAccepted, "webhook:gitlab", webhookTriggered, ""},
		{"wrong token", "/hooks/gitlab", pushMain, gl("Push Hook", "wrong"), http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"missing token", "/hooks/gitlab", pushMain, gl("Push Hook", ""), http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"token prefix", "/hooks/gitlab", pushMain, gl("Push Hook", testSecret[:4]), http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"other branch", "/hooks/gitlab", pushOther, gl("Push Hook", testSecret), http.StatusOK, "", webhookIgnored, "ignored: push to refs/heads/feature"},
		{"tag push hook", "/hooks/gitlab", pushTag, gl("Tag Push Hook", testSecret), http.StatusOK, "", webhookIgnored, ""},
		{"system hook push", "/hooks/gitlab", systemPush, gl("System Hook", testSecret), http.StatusAccepted, "webhook:gitlab", webhookTriggered, ""},
		{"system hook other event", "/hooks/gitlab", systemOther, gl("System Hook", testSecret), http.StatusOK, "", webhookIgnored, "project_create"},
		{"malformed JSON", "/hooks/gitlab", `nope`, gl("Push Hook", testSecret), http.StatusBadRequest, "", webhookBadRequest, ""},
	})
}

func TestGiteaWebhook(t *testing.T) {
	gt := func(event, sigHeader, sig string) map[string]string {
		return map[string]string{"X-Gitea-Event": event, sigHeader: sig, "Content-Type": "application/json"}
	}
	good := sign([]byte(pushMain), testSecret)
	bad := sign([]byte(pushMain), "wrong")
	forgejo := map[string]string{"X-Forgejo-Event": "push", "X-Forgejo-Signature": good}
	runWebhookCases(t, []webhookCase{
		{"push with X-Gitea-Signature", "/hooks/gitea", pushMain, gt("push", "X-Gitea-Signature", good), http.StatusAccepted, "webhook:gitea", webhookTriggered, ""},
		{"push with X-Hub-Signature-256", "/hooks/gitea", pushMain, gt("push", "X-Hub-Signature-256", "sha256="+good), http.StatusAccepted, "webhook:gitea", webhookTriggered, ""},
		{"Forgejo headers", "/hooks/gitea", pushMain, forgejo, http.StatusAccepted, "webhook:gitea", webhookTriggered, ""},
		{"bad signature", "/hooks/gitea", pushMain, gt("push", "X-Gitea-Signature", bad), http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"bad X-Gitea-Signature with good hub signature", "/hooks/gitea", pushMain,
			map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": bad, "X-Hub-Signature-256": "sha256=" + good},
			http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"missing signature", "/hooks/gitea", pushMain, map[string]string{"X-Gitea-Event": "push"}, http.StatusUnauthorized, "", webhookUnauthorized, ""},
		{"other branch", "/hooks/gitea", pushOther, gt("push", "X-Gitea-Signature", sign([]byte(pushOther), testSecret)), http.StatusOK, "", webhookIgnored, "ignored"},
		{"other event", "/hooks/gitea", `{}`, gt("issues", "X-Gitea-Signature", sign([]byte(`{}`), testSecret)), http.StatusOK, "", webhookIgnored, "ignored"},
		{"malformed JSON", "/hooks/gitea", `[`, gt("push", "X-Gitea-Signature", sign([]byte(`[`), testSecret)), http.StatusBadRequest, "", webhookBadRequest, ""},
	})
}
