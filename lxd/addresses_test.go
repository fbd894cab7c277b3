package lxd

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// stateJSON is the state of a running container on a bridge as LXD 5.0
// reports it (GET /1.0/instances?recursion=2, state.network), with a
// second NIC and the loopback interface.
const stateJSON = `{
  "status": "Running", "status_code": 103, "pid": 4242, "processes": 12,
  "network": {
    "lo": {"addresses": [
        {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
        {"family": "inet6", "address": "::1", "netmask": "128", "scope": "local"}],
      "hwaddr": "", "host_name": "", "mtu": 65536, "state": "up", "type": "loopback"},
    "eth1": {"addresses": [{"family": "inet", "address": "192.168.9.5", "netmask": "24", "scope": "global"}],
      "hwaddr": "00:16:3e:00:00:02", "host_name": "veth2", "mtu": 1500, "state": "up", "type": "broadcast"},
    "eth0": {"addresses": [
        {"family": "inet6", "address": "fe80::216:3eff:fe00:1", "netmask": "64", "scope": "link"},
        {"family": "inet", "address": "10.213.87.14", "netmask": "24", "scope": "global"},
        {"family": "inet", "address": "169.254.3.3", "netmask": "16", "scope": "link"}],
      "hwaddr": "00:16:3e:00:00:01", "host_name": "veth1", "mtu": 1500, "state": "up", "type": "broadcast"}
  }
}`

func TestGlobalIPv4(t *testing.T) {
	var st InstanceState
	if err := json.Unmarshal([]byte(stateJSON), &st); err != nil {
		t.Fatal(err)
	}
	if got, want := st.GlobalIPv4(), []string{"10.213.87.14", "192.168.9.5"}; !slices.Equal(got, want) {
		t.Errorf("GlobalIPv4() = %v, want %v (eth0 first, global scope, IPv4 only)", got, want)
	}
	if !st.HasNIC() {
		t.Error("HasNIC() = false with eth0")
	}
	var loOnly InstanceState
	if err := json.Unmarshal([]byte(`{"network": {"lo": {"addresses": [{"family": "inet", "address": "127.0.0.1", "scope": "local"}], "type": "loopback"}}}`), &loOnly); err != nil {
		t.Fatal(err)
	}
	if loOnly.GlobalIPv4() != nil || loOnly.HasNIC() {
		t.Errorf("loopback only: %v, HasNIC %v", loOnly.GlobalIPv4(), loOnly.HasNIC())
	}
	var none *InstanceState
	if none.GlobalIPv4() != nil || none.HasNIC() {
		t.Error("nil state has addresses")
	}
}

func TestListInstancesHasAddresses(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("GET /1.0/instances", func(w http.ResponseWriter, r *http.Request) {
		sync200(w, []json.RawMessage{json.RawMessage(`{"name": "web-0", "status": "Running", "state": ` + stateJSON + `}`)})
	})
	f.mux.HandleFunc("GET /1.0/instances/web-0/state", func(w http.ResponseWriter, r *http.Request) {
		sync200(w, json.RawMessage(stateJSON))
	})
	c := f.connect(t, Config{})
	list, err := c.ListInstances(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !slices.Equal(list[0].State.GlobalIPv4(), []string{"10.213.87.14", "192.168.9.5"}) {
		t.Fatalf("list: %+v", list)
	}
	st, err := c.GetInstanceState(context.Background(), "web-0")
	if err != nil {
		t.Fatal(err)
	}
	if st.GlobalIPv4()[0] != "10.213.87.14" || st.Pid != 4242 {
		t.Errorf("state: %+v", st)
	}
	if _, err := c.GetInstanceState(context.Background(), ""); err == nil {
		t.Error("empty name accepted")
	}
}
