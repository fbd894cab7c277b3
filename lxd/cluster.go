package lxd

import (
	"context"
	"net/url"
)

// ClusterMember is one member of an LXD cluster (GET
// /1.0/cluster/members?recursion=1).
type ClusterMember struct {
	ServerName string `json:"server_name"`
	URL        string `json:"url"`
	// Status is Online, Offline, Evacuated, Blocked, ...
	Status  string   `json:"status"`
	Message string   `json:"message"`
	Groups  []string `json:"groups"`
	Roles   []string `json:"roles"`
}

// Cluster is the server's clustering state (GET /1.0/cluster).
type Cluster struct {
	ServerName string `json:"server_name"`
	Enabled    bool   `json:"enabled"`
}

// GetCluster reports whether the server is a cluster member, and its name.
func (c *Client) GetCluster(ctx context.Context) (Cluster, error) {
	var out Cluster
	_, err := c.query(ctx, request{method: "GET", path: "/1.0/cluster"}, &out)
	return out, err
}

// ListClusterMembers lists every member with its status, in one request.
func (c *Client) ListClusterMembers(ctx context.Context) ([]ClusterMember, error) {
	var out []ClusterMember
	_, err := c.query(ctx, request{method: "GET", path: "/1.0/cluster/members", query: url.Values{"recursion": {"1"}}}, &out)
	return out, err
}
