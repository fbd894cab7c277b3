package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-gitops/berth/discovery"
	"github.com/berth-gitops/berth/reconciler"
	"github.com/berth-gitops/berth/reconciler/plan"
	"github.com/berth-gitops/berth/reconciler/plan/plantest"
	"github.com/berth-gitops/berth/spec"
)

// endpointsServer serves GET /api/v1/endpoints of a discovery that saw
// web-0 ready, web-1 with a Docker error holding terminal escapes, and
// db with no replica; notYet makes it answer 503 as before a first view.
func endpointsServer(t *testing.T, notYet bool) *httptest.Server {
	t.Helper()
	d, err := discovery.New(discovery.Config{})
	if err != nil {
		t.Fatal(err)
	}
	web := plantest.App("web", 2, 1, "hello:1")
	web.Spec.Container.Ports = []spec.Port{{Name: "http", Port: 8080, Protocol: "tcp"}, {Name: "metrics", Port: 9100, Protocol: "tcp"}}
	obs := plantest.Converged(web)
	obs.Instances[0].Addresses = []string{"10.213.87.10"}
	obs.Instances[1].DockerError = "boom\x1b[2J\nforged line"
	d.Update(reconciler.View{
		Desired:  plan.Desired{Revision: "0123456789abcdef", Apps: []spec.App{web, plantest.App("db", 0, 1, "pg:16")}},
		Observed: obs, At: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/endpoints" {
			http.NotFound(w, r)
			return
		}
		if notYet {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"nothing observed yet"}`))
			return
		}
		body, _ := d.Endpoints()
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestEndpointsCommand(t *testing.T) {
	srv := endpointsServer(t, false)
	code, out, errOut := berth(t, "endpoints", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `Revision 0123456789ab, observed 2026-03-01T12:00:00Z, zone berth.internal

APP  INSTANCE  ADDRESS       PORTS                            REVISION  MEMBER  READY
db   -         -             -                                -         -       -
web  web-0     10.213.87.10  http 8080/tcp, metrics 9100/tcp  r1        -       yes
web  web-1     -             http 8080/tcp, metrics 9100/tcp  r1        -       no: docker not answering: boom\x1b[2J\nforged line
`
	if out != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
	code, out, _ = berth(t, "endpoints", "--server", srv.URL+"/", "-o", "json")
	var e discovery.Endpoints
	if code != 0 || json.Unmarshal([]byte(out), &e) != nil || len(e.Apps) != 2 || !strings.Contains(out, `\u001b[2J`) {
		t.Errorf("json: exit %d: %s", code, out)
	}
}

func TestEndpointsCommandErrors(t *testing.T) {
	srv := endpointsServer(t, true)
	if code, _, errOut := berth(t, "endpoints", "--server", srv.URL); code != 1 || !strings.Contains(errOut, "503") || !strings.Contains(errOut, "nothing observed yet") {
		t.Errorf("before a view: exit %d: %s", code, errOut)
	}
	if code, _, errOut := berth(t, "endpoints", "--server", srv.URL+"/nope"); code != 1 || !strings.Contains(errOut, "404") {
		t.Errorf("wrong URL: exit %d: %s", code, errOut)
	}
	if code, _, errOut := berth(t, "endpoints", "--server", srv.URL, "-o", "yaml"); code == 0 || !strings.Contains(errOut, "yaml") {
		t.Errorf("-o yaml: exit %d: %s", code, errOut)
	}
}
