package lxd

import (
	"context"
	"net/url"
)

// Server is GET /1.0 (shared/api/server.go). Untrusted clients see only the
// API fields and Auth "untrusted".
type Server struct {
	Config        map[string]any    `json:"config"`
	APIExtensions []string          `json:"api_extensions"`
	APIStatus     string            `json:"api_status"`
	APIVersion    string            `json:"api_version"`
	Auth          string            `json:"auth"` // "trusted" or "untrusted"
	AuthMethods   []string          `json:"auth_methods"`
	Public        bool              `json:"public"`
	Environment   ServerEnvironment `json:"environment"`
}

// ServerEnvironment describes the host.
type ServerEnvironment struct {
	Addresses              []string `json:"addresses"`
	Architectures          []string `json:"architectures"`
	Certificate            string   `json:"certificate"` // PEM
	CertificateFingerprint string   `json:"certificate_fingerprint"`
	Driver                 string   `json:"driver"`
	DriverVersion          string   `json:"driver_version"`
	Kernel                 string   `json:"kernel"`
	KernelArchitecture     string   `json:"kernel_architecture"`
	KernelVersion          string   `json:"kernel_version"`
	OSName                 string   `json:"os_name"`
	OSVersion              string   `json:"os_version"`
	Project                string   `json:"project"`
	Server                 string   `json:"server"`
	ServerClustered        bool     `json:"server_clustered"`
	ServerName             string   `json:"server_name"`
	ServerPid              int      `json:"server_pid"`
	ServerVersion          string   `json:"server_version"`
	Storage                string   `json:"storage"`
	StorageVersion         string   `json:"storage_version"`
}

// GetServer reads GET /1.0 afresh and returns it with its ETag.
func (c *Client) GetServer(ctx context.Context) (*Server, string, error) {
	var s Server
	etag, err := c.query(ctx, request{method: "GET", path: "/1.0", project: true}, &s)
	if err != nil {
		return nil, "", err
	}
	return &s, etag, nil
}

// UpdateServerConfig replaces the server (global, not per project) config (PUT /1.0) with If-Match:
// etag ("" = no check); a concurrent change gives ErrPreconditionFailed.
// Start from GetServer: keys left out are reset to their defaults. Values are
// strings (LXD also accepts numbers and booleans).
func (c *Client) UpdateServerConfig(ctx context.Context, config map[string]any, etag string) error {
	if config == nil {
		config = map[string]any{}
	}
	_, err := c.run(ctx, request{method: "PUT", path: "/1.0", body: map[string]any{"config": config}, etag: etag})
	return err
}

// PatchServerConfig changes only the given keys (PATCH /1.0); "" resets a
// key.
func (c *Client) PatchServerConfig(ctx context.Context, config map[string]any, etag string) error {
	_, err := c.run(ctx, request{method: "PATCH", path: "/1.0", body: map[string]any{"config": config}, etag: etag})
	return err
}

// CertificatesPost adds a certificate to the trust store
// (shared/api/certificate.go).
type CertificatesPost struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`        // "client" (default) or "metrics"
	Certificate string   `json:"certificate"` // base64 DER, no PEM armour; "" = the TLS client certificate of this request
	Password    string   `json:"password,omitempty"`
	Restricted  bool     `json:"restricted"`
	Projects    []string `json:"projects"`
}

// Certificate is a trusted certificate.
type Certificate struct {
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	Certificate string   `json:"certificate"` // PEM
	Fingerprint string   `json:"fingerprint"`
	Restricted  bool     `json:"restricted"`
	Projects    []string `json:"projects"`
}

// AddCertificate trusts a certificate. One already trusted gives
// ErrConflict.
func (c *Client) AddCertificate(ctx context.Context, cert CertificatesPost) error {
	if cert.Type == "" {
		cert.Type = "client"
	}
	if cert.Projects == nil {
		cert.Projects = []string{}
	}
	_, err := c.run(ctx, request{method: "POST", path: "/1.0/certificates", body: cert})
	return err
}

// ListCertificates lists the trust store.
func (c *Client) ListCertificates(ctx context.Context) ([]Certificate, error) {
	var out []Certificate
	_, err := c.query(ctx, request{method: "GET", path: "/1.0/certificates", query: url.Values{"recursion": {"1"}}}, &out)
	return out, err
}

// DeleteCertificate removes a certificate from the trust store by
// fingerprint.
func (c *Client) DeleteCertificate(ctx context.Context, fingerprint string) error {
	if fingerprint == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: "/1.0/certificates/" + pathEscape(fingerprint)})
	return err
}
