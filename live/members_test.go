package live

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/berth-gitops/berth/engine"
	"github.com/berth-gitops/berth/ownership"
)

// membersLXD is a cluster of m1, m2 and m3 with m3's status given, whose
// server config holds what PATCH /1.0 wrote.
type membersLXD struct {
	mu      sync.Mutex
	config  map[string]any
	m3      string
	patches int
}

func (f *membersLXD) handler(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(meta any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"type": "sync", "status": "Success", "status_code": 200, "metadata": meta})
	}
	switch {
	case r.Method == "PATCH" && r.URL.Path == "/1.0":
		var body struct{ Config map[string]any }
		_ = json.NewDecoder(r.Body).Decode(&body)
		for k, v := range body.Config {
			f.config[k] = v
		}
		f.patches++
		reply(nil)
	case r.URL.Path == "/1.0":
		reply(map[string]any{"api_extensions": []string{"instance_get_full"}, "api_version": "1.0", "auth": "trusted", "config": f.config})
	case r.URL.Path == "/1.0/cluster":
		reply(map[string]any{"enabled": true})
	case r.URL.Path == "/1.0/cluster/members":
		reply([]map[string]any{{"server_name": "m1", "status": "Online"}, {"server_name": "m2", "status": "Online"}, {"server_name": "m3", "status": f.m3}})
	default:
		http.NotFound(w, r)
	}
}

// Since when a member has been lost is kept in LXD by a System that acts,
// and a new System (a restarted daemon, the next apply) counts from there;
// once the member is back, the record is cleared. A System that only looks
// writes nothing.
func TestLostMembersAreCountedAcrossRestarts(t *testing.T) {
	f := &membersLXD{config: map[string]any{}, m3: "Offline"}
	c := newFakeLXD(t, f.handler)
	newSys := func(record bool) *System {
		s := New(c, "o", engine.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		s.RecordMembers = record
		t.Cleanup(s.Close)
		return s
	}
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	if _, err := newSys(false).observeMembers(ctx, t0); err != nil || f.patches != 0 {
		t.Fatalf("a System that only looks: err %v, writes %d", err, f.patches)
	}
	if _, err := newSys(true).observeMembers(ctx, t0); err != nil || f.patches != 1 {
		t.Fatalf("first sight of m3 lost: err %v, writes %d", err, f.patches)
	}
	key := ownership.MembersKey("o", "")
	if got := f.config[key]; got != "m3=1800000000" {
		t.Fatalf("%s = %v", key, got)
	}
	// A restart 5 minutes later: m3 has been lost since t0.
	members, err := newSys(true).observeMembers(ctx, t0.Add(5*time.Minute))
	if err != nil || len(members) != 3 || !members[2].Since.Equal(t0) || f.patches != 1 {
		t.Fatalf("after a restart: %+v, err %v, writes %d; want m3 since %v and no new write", members, err, f.patches, t0)
	}
	// m3 is back: the record goes.
	f.m3 = "Online"
	if _, err := newSys(true).observeMembers(ctx, t0.Add(6*time.Minute)); err != nil || f.config[key] != "" {
		t.Fatalf("m3 back: err %v, %s = %v", err, key, f.config[key])
	}
	// A new loss counts from its own first sight, not from t0.
	f.m3 = "Offline"
	t1 := t0.Add(time.Hour)
	members, _ = newSys(true).observeMembers(ctx, t1)
	if !members[2].Since.Equal(t1) {
		t.Errorf("a new loss since %v; want %v", members[2].Since, t1)
	}
}

func TestParseLostSince(t *testing.T) {
	got := parseLostSince("m3=100 bad m4=x =5 m5=7")
	if len(got) != 2 || got["m3"].Unix() != 100 || got["m5"].Unix() != 7 {
		t.Errorf("parseLostSince: %v", got)
	}
}
