package spec

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// MinReplaceUnreachable is the shortest placement.replaceUnreachable: a
// member that misses a few heartbeats must not have its replicas rebuilt.
const MinReplaceUnreachable = time.Minute

// HighestSlot is the largest slot the app's instances may take, so the
// largest "<name>-<slot>" LXD must accept: replicas-1, and with
// placement.replaceUnreachable up to twice the replicas less one, since
// the planner (reconciler/plan) builds a stand-in for each lost replica in
// the next free slot after the spec's, at most one per replica. An app
// scaled to zero still has its name checked as slot 0.
func (s *AppSpec) HighestSlot() int {
	n := max(s.Replicas, 1)
	if p := s.System.Placement; p != nil && p.ReplaceUnreachable > 0 {
		n *= 2
	}
	return n - 1
}

// memberNames reads placement.members: cluster member names, each once.
func (d *decoder) memberNames(n *yaml.Node) []string {
	list, ok := d.stringList(n)
	if !ok {
		return list
	}
	items, _ := d.list(n)
	seen := map[string]bool{}
	for i, m := range list {
		d.pushIndex(i, items[i])
		switch msg := checkMemberName(m); {
		case msg != "":
			d.errorf(d.resolve(items[i]), "cluster member %s", msg)
		case seen[m]:
			d.errorf(d.resolve(items[i]), "cluster member %q is listed twice", m)
		}
		seen[m] = true
		d.pop()
	}
	if len(list) == 0 {
		return nil
	}
	return list
}

// checkMemberName says what is wrong with an LXD cluster member or group
// name, "" when nothing is: it is a URL path segment in LXD's API.
func checkMemberName(s string) string {
	switch {
	case s == "":
		return "name must not be empty"
	case len(s) > 63:
		return "name is longer than 63 characters"
	case strings.ContainsAny(s, "/ \t\n") || s == "." || s == "..":
		return fmt.Sprintf("name %q is not valid: no '/', spaces, '.' or '..'", s)
	}
	return ""
}
