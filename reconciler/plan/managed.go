package plan

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/berth-gitops/berth/ownership"
	"github.com/berth-gitops/berth/spec"
)

// Managed systems: what the planner decides about a replica's base image
// and its provisioning, from the spec, the observed keys and Observed.At.

// provisionReason says why the replica's provision must run again, if it
// must: its content changed (or it never succeeded), or it is due again
// under provision.every.
func (pl *planner) provisionReason(a *appPlan, inst *Instance) (Reason, bool) {
	p := a.app.Spec.System.Provision
	if p == nil {
		return Reason{}, false
	}
	got := inst.Config[ownership.KeyProvisionHash]
	if got != a.provHash {
		old := got
		if got == ownership.ProvisionPending {
			old = "not done (failed or interrupted)"
		}
		return Reason{Field: "system.provision", Old: old, New: a.provHash}, true
	}
	if due, ok := provisionDue(inst, p.Every.D(), pl.at); ok {
		return Reason{Field: "system.provision.every", Old: "last run " + due.last, New: "due since " + due.at.UTC().Format(time.RFC3339)}, true
	}
	return Reason{}, false
}

type dueAt struct {
	last string    // the recorded time of the last run
	at   time.Time // when it fell due
}

// provisionDue reports whether a periodic provision is due at now. Each
// replica's period is shortened by up to a tenth, by a fixed amount its
// name gives: replicas provisioned together do not all fall due in the
// same run, and the same inputs always give the same answer.
func provisionDue(inst *Instance, every time.Duration, now time.Time) (dueAt, bool) {
	if every <= 0 || now.IsZero() {
		return dueAt{}, false
	}
	last := inst.Config[ownership.KeyProvisionedAt]
	t, err := time.Parse(time.RFC3339, last)
	if err != nil {
		// Never recorded (or garbled): the content check ran it, or will.
		return dueAt{}, false
	}
	sum := sha256.Sum256([]byte(inst.Name))
	spread := time.Duration(binary.BigEndian.Uint64(sum[:8]) % uint64(every/10+1))
	at := t.Add(every - spread)
	return dueAt{last: last, at: at}, !now.Before(at)
}

// baseImageReason compares the image a replica was built from with the
// one its system.image alias points to now: the alias moving to a new
// build is how a base OS gets its patches. ok is false when they agree or
// cannot be compared (a fingerprint or a remote image in the spec, images
// not observed, an instance that does not say).
func (pl *planner) baseImageReason(sys *spec.System, inst *Instance) (Reason, bool) {
	img := pl.images[sys.Image]
	if img == nil || inst.BaseImage == "" || inst.BaseImage == img.Fingerprint {
		return Reason{}, false
	}
	return Reason{Field: "base image", Old: shortFingerprint(inst.BaseImage), New: shortFingerprint(img.Fingerprint)}, true
}

// imagesByAlias indexes images by each of their aliases, for planning and
// status.
func imagesByAlias(images []Image) map[string]*Image {
	out := map[string]*Image{}
	for i := range images {
		for _, a := range images[i].Aliases {
			out[a] = &images[i]
		}
	}
	return out
}

// shortFingerprint is the first 8 hex digits of an image fingerprint, as
// people compare them.
func shortFingerprint(fp string) string {
	if len(fp) > 8 {
		return fp[:8]
	}
	return fp
}
