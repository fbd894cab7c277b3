package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/berth-gitops/berth/reconciler/plan"
)

// observedFromServer reads a running daemon's last look at the world (GET
// /api/v1/observed): planning against it costs one HTTP request instead of
// an LXD list and a Docker tunnel per instance. tokenFile holds the
// daemon's sync token, when it has one.
func observedFromServer(ctx context.Context, base, tokenFile string) (plan.Observed, time.Time, error) {
	var none plan.Observed
	body, err := getFromServer(ctx, serverGet{base: base, path: "/api/v1/observed", tokenFile: tokenFile, limit: maxObservedSize, timeout: 30 * time.Second})
	if err != nil {
		return none, time.Time{}, err
	}
	var top struct {
		At       time.Time       `json:"at"`
		Observed json.RawMessage `json:"observed"`
	}
	if err := json.Unmarshal(body, &top); err != nil {
		return none, time.Time{}, fmt.Errorf("%s: not a berth daemon's observed state: %w", safeText(base), err)
	}
	var obs plan.Observed
	if err := decodeObserved(top.Observed, &obs); err != nil {
		return none, time.Time{}, fmt.Errorf("%s: not an observed-state snapshot: %w", safeText(base), err)
	}
	return obs, top.At, nil
}
