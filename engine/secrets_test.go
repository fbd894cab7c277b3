package engine

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/mount"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// Secret files are read-only bind mounts of files on berth's tmpfs in
// the instance; the container's config (docker inspect) holds their
// paths and tags, never a value or its MAC.
func TestBuildConfigSecretFiles(t *testing.T) {
	const mac = "6307fd4d8b04b525e0337ad65922c8906cc804d70de66edde334e184f6f7e9fb"
	d := Desired{App: "web", Slot: 0, Revision: "abc", Spec: spec.Container{
		Image: "reg/web:1",
		SecretFiles: []spec.SecretFile{
			{File: "secrets/web.enc.yaml", Key: "db.password", Target: "/run/secrets/db_password", Mode: "0400", Owner: "65534:65534", MAC: mac},
		},
	}}
	cfg, host, err := buildConfig(d, "reg/web:1")
	if err != nil {
		t.Fatal(err)
	}
	hash := d.Spec.Hash()
	want := []mount.Mount{{Type: mount.TypeBind, Source: SecretSource("web", hash, "/run/secrets/db_password"), Target: "/run/secrets/db_password", ReadOnly: true}}
	if fmt.Sprint(host.Mounts) != fmt.Sprint(want) {
		t.Errorf("mounts = %+v, want %+v", host.Mounts, want)
	}
	if src := host.Mounts[0].Source; !strings.HasPrefix(src, SecretRoot+"/web/"+hash+"/") {
		t.Errorf("source %s is not under the container's folder on berth's tmpfs", src)
	}
	if got := ownership.SecretTags(cfg.Labels); len(got) != 1 || got["/run/secrets/db_password"] == "" {
		t.Errorf("label %s = %q, want a tag for the target", ownership.LabelSecrets, cfg.Labels[ownership.LabelSecrets])
	}
	all, _ := json.Marshal(struct{ C, H any }{cfg, host})
	if strings.Contains(string(all), mac) || strings.Contains(string(all), mac[:16]) {
		t.Errorf("the container's config shows the secret's MAC: %s", all)
	}
	if len(cfg.Env) != 0 {
		t.Errorf("env = %v: a secret is never env", cfg.Env)
	}
}
