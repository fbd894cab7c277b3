package reconciler

import (
	"strings"
	"testing"

	"github.com/berth-gitops/berth/spec"
)

func TestNewDesiredBlocksPruneForUnnamedInvalidApp(t *testing.T) {
	res, err := spec.LoadBytes("apps/web.yaml", []byte("apiVersion: berth/v1\nkind: App\nmetadata: {nme: web}\nspec:\n  system: {image: x}\n  container: {image: reg/x:1}\n"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := NewDesired("r1", res)
	if d.PruneBlocked == "" || !strings.Contains(d.PruneBlocked, "apps/web.yaml") {
		t.Fatalf("PruneBlocked = %q (unidentified %v)", d.PruneBlocked, res.Unidentified)
	}
}
