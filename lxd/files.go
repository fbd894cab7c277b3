package lxd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// FileOptions are the owner and permission bits of a file or directory
// written into an instance, as seen inside it (LXD shifts them for an
// unprivileged container).
type FileOptions struct {
	UID, GID int
	// Mode holds the permission bits (0644); other bits are ignored.
	Mode fs.FileMode
}

// FileInfo is what LXD reports about a path in an instance.
type FileInfo struct {
	Type     string // "file", "directory" or "symlink"
	UID, GID int
	Mode     fs.FileMode
}

// extModifyPerm lets a file push set the owner and mode of a file that
// already exists. LXD 5.0 lacks it: there a push keeps an existing file's
// owner and mode.
const extModifyPerm = "instances_files_modify_permissions"

func filePath(instance, p string) (string, url.Values) {
	return instancePath(instance) + "/files", url.Values{"path": {p}}
}

// checkFilePath refuses what LXD would resolve somewhere else than the
// caller meant: a relative path, or one that is not clean ("/a/../b").
func checkFilePath(instance, p string) error {
	if instance == "" {
		return errEmptyName
	}
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("lxd: file path %q in %s: want a clean absolute path", p, instance)
	}
	return nil
}

func (o FileOptions) header(typ string) http.Header {
	return http.Header{
		"X-LXD-type": {typ},
		"X-LXD-uid":  {strconv.Itoa(o.UID)},
		"X-LXD-gid":  {strconv.Itoa(o.GID)},
		// LXD reads a leading 0 as octal.
		"X-LXD-mode": {fmt.Sprintf("%04o", o.Mode.Perm())},
	}
}

// StatFile returns what LXD knows of path in the instance (HEAD, the
// "instance_file_head" extension), without its content. A missing path
// matches ErrNotFound.
func (c *Client) StatFile(ctx context.Context, instance, p string) (FileInfo, error) {
	if err := checkFilePath(instance, p); err != nil {
		return FileInfo{}, err
	}
	fp, q := filePath(instance, p)
	resp, err := c.fileRequest(ctx, "HEAD", fp, q)
	if err != nil {
		return FileInfo{}, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return FileInfo{}, &StatusError{Code: resp.StatusCode, Method: "HEAD", Path: fp + " (" + p + ")"}
	}
	var info FileInfo
	var errs []error
	info.Type = resp.Header.Get("X-LXD-type")
	info.UID, err = strconv.Atoi(resp.Header.Get("X-LXD-uid"))
	errs = append(errs, err)
	info.GID, err = strconv.Atoi(resp.Header.Get("X-LXD-gid"))
	errs = append(errs, err)
	mode, err := strconv.ParseUint(resp.Header.Get("X-LXD-mode"), 8, 32)
	errs = append(errs, err)
	info.Mode = fs.FileMode(mode).Perm()
	if err := errors.Join(errs...); err != nil {
		return FileInfo{}, fmt.Errorf("lxd: HEAD %s (%s): bad X-LXD-* headers: %w", fp, p, err)
	}
	return info, nil
}

// PushFile writes content to the file at path in the instance with the
// owner and mode of opts, creating missing parent directories (root's,
// 0755). A file that exists is overwritten and given opts' owner and mode
// too: where LXD cannot change those on an existing file (LXD 5.0), a file
// whose owner or mode differ is deleted first, so for a moment it is
// missing; an unchanged one is overwritten in place.
func (c *Client) PushFile(ctx context.Context, instance, p string, content []byte, opts FileOptions) error {
	if err := checkFilePath(instance, p); err != nil {
		return err
	}
	h := opts.header("file")
	h.Set("X-LXD-write", "overwrite")
	if c.HasExtension(extModifyPerm) {
		h.Set("X-LXD-modify-perm", "uid,gid,mode")
	} else {
		info, err := c.StatFile(ctx, instance, p)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return err
		case info.Type == "directory":
			return fmt.Errorf("lxd: push %s into %s: it is a directory", p, instance)
		case info.UID != opts.UID || info.GID != opts.GID || info.Mode != opts.Mode.Perm():
			if err := c.DeleteFile(ctx, instance, p); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
	}
	push := func() error {
		fp, q := filePath(instance, p)
		// The content type matters: LXD parses a form body (curl's default
		// type) and then writes an empty file.
		_, err := c.do(ctx, request{method: "POST", path: fp, query: q, project: true,
			body: bytes.NewReader(content), ctype: "application/octet-stream", header: h})
		return err
	}
	err := push()
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	// LXD answers 404 for a missing parent as for a missing instance; the
	// directories tell which.
	if err := c.MakeDirAll(ctx, instance, path.Dir(p), FileOptions{Mode: 0o755}); err != nil {
		return err
	}
	return push()
}

// MakeDirAll creates the directory at path in the instance and any missing
// parents, each with opts' owner and mode. Directories that exist are left
// as they are.
func (c *Client) MakeDirAll(ctx context.Context, instance, p string, opts FileOptions) error {
	if p == "/" {
		return nil
	}
	if err := checkFilePath(instance, p); err != nil {
		return err
	}
	// From the top down: LXD creates one level per request.
	parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i := range parts {
		dir := "/" + strings.Join(parts[:i+1], "/")
		fp, q := filePath(instance, dir)
		if _, err := c.do(ctx, request{method: "POST", path: fp, query: q, project: true, header: opts.header("directory")}); err != nil {
			return fmt.Errorf("lxd: create directory %s in %s: %w", dir, instance, err)
		}
	}
	return nil
}

// DeleteFile deletes the file or empty directory at path in the instance.
func (c *Client) DeleteFile(ctx context.Context, instance, p string) error {
	if err := checkFilePath(instance, p); err != nil {
		return err
	}
	fp, q := filePath(instance, p)
	_, err := c.do(ctx, request{method: "DELETE", path: fp, query: q, project: true})
	return err
}

// PullFile returns the content of the file at path in the instance, at
// most limit bytes of it.
func (c *Client) PullFile(ctx context.Context, instance, p string, limit int64) ([]byte, error) {
	if err := checkFilePath(instance, p); err != nil {
		return nil, err
	}
	fp, q := filePath(instance, p)
	resp, err := c.fileRequest(ctx, "GET", fp, q)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("lxd: GET %s (%s): %w", fp, p, err)
	}
	if resp.StatusCode != http.StatusOK {
		var env response
		msg := strings.TrimSpace(buf.String())
		if json.Unmarshal(buf.Bytes(), &env) == nil && env.Error != "" {
			msg = env.Error
		}
		return nil, &StatusError{Code: resp.StatusCode, Message: msg, Method: "GET", Path: fp + " (" + p + ")"}
	}
	if resp.Header.Get("X-LXD-type") != "file" {
		return nil, fmt.Errorf("lxd: GET %s (%s): not a file (%q)", fp, p, resp.Header.Get("X-LXD-type"))
	}
	if int64(buf.Len()) > limit {
		return nil, fmt.Errorf("lxd: GET %s (%s): larger than %d bytes", fp, p, limit)
	}
	return buf.Bytes(), nil
}

// fileRequest sends a bodiless request of the file API, whose answer is
// the file itself rather than an envelope, to the endpoints in turn.
func (c *Client) fileRequest(ctx context.Context, method, fp string, q url.Values) (*http.Response, error) {
	return tryEndpoints(ctx, c, method, func(ep *endpoint) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, method, c.url(ep.base, fp, q, true), nil)
		if err != nil {
			return nil, fmt.Errorf("lxd: %s %s: %w", method, fp, err)
		}
		req.Header.Set("User-Agent", c.userAgent)
		c.count(method, fp)
		resp, err := ep.http.Do(req)
		if err != nil {
			if ue := (*UnreachableError)(nil); errors.As(err, &ue) {
				err = ue
			}
			return nil, fmt.Errorf("lxd: %s %s: %w", method, fp, err)
		}
		return resp, nil
	})
}
