package lxd

import "context"

// ProfilePut is the writable part of a profile.
type ProfilePut struct {
	Config      map[string]string            `json:"config"`
	Description string                       `json:"description"`
	Devices     map[string]map[string]string `json:"devices"`
}

// Profile is an LXD profile.
type Profile struct {
	ProfilePut
	Name   string   `json:"name"`
	UsedBy []string `json:"used_by"`
}

func profilePath(name string) string { return "/1.0/profiles/" + pathEscape(name) }

// GetProfile returns the profile and its ETag.
func (c *Client) GetProfile(ctx context.Context, name string) (*Profile, string, error) {
	if name == "" {
		return nil, "", errEmptyName
	}
	var p Profile
	etag, err := c.query(ctx, request{method: "GET", path: profilePath(name), project: true}, &p)
	if err != nil {
		return nil, "", err
	}
	return &p, etag, nil
}

// CreateProfile creates a profile; an existing name gives ErrConflict.
func (c *Client) CreateProfile(ctx context.Context, name string, p ProfilePut) error {
	if name == "" {
		return errEmptyName
	}
	body := struct {
		ProfilePut
		Name string `json:"name"`
	}{p, name}
	_, err := c.run(ctx, request{method: "POST", path: "/1.0/profiles", project: true, body: body})
	return err
}

// UpdateProfile replaces the profile (PUT) with If-Match: etag ("" = no
// check). Instances using it are updated by LXD.
func (c *Client) UpdateProfile(ctx context.Context, name string, p ProfilePut, etag string) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "PUT", path: profilePath(name), project: true, body: p, etag: etag})
	return err
}

// DeleteProfile deletes a profile that no instance uses.
func (c *Client) DeleteProfile(ctx context.Context, name string) error {
	if name == "" {
		return errEmptyName
	}
	_, err := c.run(ctx, request{method: "DELETE", path: profilePath(name), project: true})
	return err
}
