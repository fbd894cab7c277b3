package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// observedFromServer reads a running daemon's last look at the world (GET
// /api/v1/observed): planning against it costs one HTTP request instead of
// an LXD list and a Docker tunnel per instance. tokenFile holds the
// daemon's sync token, when it has one.
func observedFromServer(ctx context.Context, base, tokenFile string) (plan.Observed, time.Time, error) {
	var none plan.Observed
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(base, "/")+"/api/v1/observed", nil)
	if err != nil {
		return none, time.Time{}, err
	}
	if tokenFile != "" {
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			return none, time.Time{}, err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return none, time.Time{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxObservedSize+1))
	if err != nil {
		return none, time.Time{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return none, time.Time{}, fmt.Errorf("%s: %s: %s", base, resp.Status, safeText(strings.TrimSpace(string(body))))
	}
	if len(body) > maxObservedSize {
		return none, time.Time{}, fmt.Errorf("%s: observed state larger than %d MiB", base, maxObservedSize>>20)
	}
	var top struct {
		At       time.Time       `json:"at"`
		Observed json.RawMessage `json:"observed"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return none, time.Time{}, fmt.Errorf("%s: not a berth daemon's observed state: %w", base, err)
	}
	var obs plan.Observed
	if err := decodeObserved(top.Observed, &obs); err != nil {
		return none, time.Time{}, fmt.Errorf("%s: not an observed-state snapshot: %w", base, err)
	}
	return obs, top.At, nil
}
