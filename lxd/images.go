package lxd

import (
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"time"
)

// Image is an image on the server (shared/api/image.go).
type Image struct {
	Fingerprint  string            `json:"fingerprint"`
	Filename     string            `json:"filename"`
	Architecture string            `json:"architecture"`
	Type         string            `json:"type"` // "container" or "virtual-machine"
	Size         int64             `json:"size"`
	Public       bool              `json:"public"`
	AutoUpdate   bool              `json:"auto_update"`
	Cached       bool              `json:"cached"`
	Properties   map[string]string `json:"properties"`
	Profiles     []string          `json:"profiles"`
	Aliases      []struct {
		Name        string `json:"name"`
		Description string `json:"description"`
	} `json:"aliases"`
	CreatedAt  time.Time `json:"created_at"`
	UploadedAt time.Time `json:"uploaded_at"`
	LastUsedAt time.Time `json:"last_used_at"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// ImageImportOptions are sent as X-LXD-* headers with an upload.
type ImageImportOptions struct {
	Public     bool
	Properties map[string]string
	Filename   string
	// Fingerprint, when set, is the expected fingerprint; LXD fails the
	// import if the upload does not hash to it.
	Fingerprint string
}

func (o ImageImportOptions) header() http.Header {
	h := http.Header{}
	if o.Public {
		h.Set("X-LXD-public", "true")
	}
	if len(o.Properties) > 0 {
		v := url.Values{}
		for k, p := range o.Properties {
			v.Set(k, p)
		}
		h.Set("X-LXD-properties", v.Encode())
	}
	if o.Filename != "" {
		h.Set("X-LXD-filename", o.Filename)
	}
	if o.Fingerprint != "" {
		h.Set("X-LXD-fingerprint", o.Fingerprint)
	}
	return h
}

// ImportImage uploads a split image: the metadata tarball (metadata.yaml
// with architecture and creation_date, templates/) and the rootfs (a
// squashfs or tarball for containers). The body is multipart/form-data with
// the part "metadata" first, then "rootfs", which is the order LXD requires
// (lxd/images.go getImgPostInfo). It is streamed through a pipe, never held
// in memory. The fingerprint is sha256(metadata || rootfs). Uploading an
// image that exists fails with an error matching ErrConflict.
func (c *Client) ImportImage(ctx context.Context, metadata, rootfs io.Reader, opts ImageImportOptions) (string, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := writeParts(mw, metadata, rootfs)
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err) // nil closes with io.EOF
	}()
	fp, err := c.importImage(ctx, pr, mw.FormDataContentType(), opts)
	// The transport closes the body, which fails any pending pipe write;
	// wait so the writer goroutine is gone when we return.
	pr.CloseWithError(io.ErrClosedPipe)
	<-done
	return fp, err
}

func writeParts(mw *multipart.Writer, metadata, rootfs io.Reader) error {
	part, err := mw.CreateFormFile("metadata", "metadata.tar")
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, metadata); err != nil {
		return fmt.Errorf("lxd: reading image metadata: %w", err)
	}
	part, err = mw.CreateFormFile("rootfs", "rootfs")
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, rootfs); err != nil {
		return fmt.Errorf("lxd: reading image rootfs: %w", err)
	}
	return nil
}

// ImportImageUnified uploads a unified image tarball (metadata.yaml,
// rootfs/, templates/) as the raw body. The fingerprint is
// sha256(tarball).
func (c *Client) ImportImageUnified(ctx context.Context, tarball io.Reader, opts ImageImportOptions) (string, error) {
	return c.importImage(ctx, io.NopCloser(tarball), "application/octet-stream", opts)
}

func (c *Client) importImage(ctx context.Context, body io.Reader, ctype string, opts ImageImportOptions) (string, error) {
	op, err := c.run(ctx, request{method: "POST", path: "/1.0/images", project: true, body: body, ctype: ctype, header: opts.header()})
	if err != nil {
		return "", err
	}
	if op == nil {
		return "", fmt.Errorf("lxd: image upload returned no operation")
	}
	var meta struct {
		Fingerprint string `json:"fingerprint"`
	}
	if err := op.DecodeMetadata(&meta); err != nil {
		return "", err
	}
	if meta.Fingerprint == "" {
		return "", fmt.Errorf("lxd: image upload: no fingerprint in operation %s", op.ID)
	}
	return meta.Fingerprint, nil
}

func imagePath(fp string) string { return "/1.0/images/" + pathEscape(fp) }

// GetImage returns an image by fingerprint (a unique prefix works) with its
// ETag.
func (c *Client) GetImage(ctx context.Context, fingerprint string) (*Image, string, error) {
	if fingerprint == "" {
		return nil, "", errEmptyName
	}
	var img Image
	etag, err := c.query(ctx, request{method: "GET", path: imagePath(fingerprint), project: true}, &img)
	if err != nil {
		return nil, "", err
	}
	return &img, etag, nil
}

// ListImages lists the project's images.
func (c *Client) ListImages(ctx context.Context) ([]Image, error) {
	var out []Image
	_, err := c.query(ctx, request{method: "GET", path: "/1.0/images", query: url.Values{"recursion": {"1"}}, project: true}, &out)
	return out, err
}

// DeleteImage deletes an image and waits.
func (c *Client) DeleteImage(ctx context.Context, fingerprint string) error {
	if fingerprint == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: imagePath(fingerprint), project: true})
	return err
}

// ImageAlias is an alias pointing at an image.
type ImageAlias struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Target      string `json:"target"` // fingerprint
	Type        string `json:"type"`
}

func aliasPath(name string) string { return "/1.0/images/aliases/" + pathEscape(name) }

// CreateImageAlias creates an alias (LXD answers 201). An existing alias
// gives 409, matching ErrConflict.
func (c *Client) CreateImageAlias(ctx context.Context, name, fingerprint, description string) error {
	if name == "" || fingerprint == "" {
		return errEmptyName
	}
	body := map[string]string{"name": name, "target": fingerprint, "description": description}
	_, err := c.run(ctx, request{method: "POST", path: "/1.0/images/aliases", project: true, body: body})
	return err
}

// GetImageAlias returns an alias and its ETag.
func (c *Client) GetImageAlias(ctx context.Context, name string) (*ImageAlias, string, error) {
	if name == "" {
		return nil, "", errEmptyName
	}
	var a ImageAlias
	etag, err := c.query(ctx, request{method: "GET", path: aliasPath(name), project: true}, &a)
	if err != nil {
		return nil, "", err
	}
	return &a, etag, nil
}

// UpdateImageAlias re-points an alias (PUT) with If-Match: etag ("" = no
// check).
func (c *Client) UpdateImageAlias(ctx context.Context, name, fingerprint, description, etag string) error {
	if name == "" || fingerprint == "" {
		return errEmptyName
	}
	body := map[string]string{"target": fingerprint, "description": description}
	_, err := c.run(ctx, request{method: "PUT", path: aliasPath(name), project: true, body: body, etag: etag})
	return err
}

// DeleteImageAlias deletes an alias (not the image).
func (c *Client) DeleteImageAlias(ctx context.Context, name string) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: aliasPath(name), project: true})
	return err
}
