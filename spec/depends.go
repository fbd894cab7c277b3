package spec

import (
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// dependsOn reads spec.dependsOn: each app at most once, never the app
// itself (checked by the loader, which knows every app).
func (d *decoder) dependsOn(n *yaml.Node) []Dependency {
	items, _ := d.list(n)
	var out []Dependency
	seen := map[string]int{}
	for i, item := range items {
		d.pushIndex(i, item)
		dep := Dependency{MinReady: DefaultMinReady, Timeout: DefaultDependencyTimeout}
		if object(d, item, dependencyFields, &dep) && dep.App != "" {
			at := d.member(item, "app")
			if first, dup := seen[dep.App]; dup {
				d.push("app", nil)
				d.errorf(at, "app %q is already listed in dependsOn[%d]", dep.App, first)
				d.pop()
			} else {
				seen[dep.App] = i
			}
			d.depNodes = append(d.depNodes, at)
		} else {
			d.depNodes = append(d.depNodes, nil)
		}
		out = append(out, dep)
		d.pop()
	}
	return out
}

// checkDependencies checks spec.dependsOn across apps: an unknown app, a
// minReady larger than the dependency's replicas, and cycles. Each app
// with such a problem is invalid (held); an app that depends on it is
// not: the planner blocks it until its dependency is valid again.
func (l *loader) checkDependencies(byName map[string]*loadedDoc) {
	// An app in a file that could not be read may be the one named: the
	// planner says it is missing, the loader cannot say it is unknown.
	treeComplete := len(l.unparsable) == 0
	for _, d := range l.docs {
		if d.name == nil {
			treeComplete = false
		}
	}
	for _, doc := range l.docs {
		if doc.name == nil {
			continue
		}
		for i, dep := range doc.app.Spec.DependsOn {
			target, known := byName[dep.App]
			switch {
			case i >= len(doc.deps) || doc.deps[i] == nil:
			case dep.App == doc.app.Metadata.Name:
				l.depProblem(doc, i, "an app cannot depend on itself")
			case !known && treeComplete:
				l.depProblem(doc, i, fmt.Sprintf("unknown app %q: no app of that name in the spec tree", dep.App))
			case known && target.valid && dep.MinReady.Of(target.app.Spec.Replicas) > target.app.Spec.Replicas:
				l.depProblem(doc, i, fmt.Sprintf("minReady is %s but app %q has %d replicas", dep.MinReady, dep.App, target.app.Spec.Replicas))
			}
		}
	}
	for _, cycle := range dependencyCycles(l.docs, byName) {
		doc := byName[cycle[0]]
		i := slices.IndexFunc(doc.app.Spec.DependsOn, func(d Dependency) bool { return d.App == cycle[1] })
		l.depProblem(doc, i, "dependency cycle: "+strings.Join(cycle, " → "))
	}
}

// depProblem reports a problem with dependsOn[i].app of doc and holds it.
func (l *loader) depProblem(doc *loadedDoc, i int, msg string) {
	diag := Diagnostic{File: doc.app.Origin.File, Line: doc.app.Origin.Line, Path: fmt.Sprintf("spec.dependsOn[%d].app", i), Message: msg}
	if i < len(doc.deps) && doc.deps[i] != nil {
		diag.Line, diag.Col = doc.deps[i].Line, doc.deps[i].Column
	}
	l.diags = append(l.diags, diag)
	doc.valid = false
}

// dependencyCycles finds every app on a dependency cycle (other than a
// self-dependency, reported on its own) and, for each, the shortest cycle
// through it, as the path of names from the app back to itself. It is
// linear in apps and dependencies but for the cycles themselves: one
// breadth-first search per app on one.
func dependencyCycles(docs []*loadedDoc, byName map[string]*loadedDoc) [][]string {
	edges := map[string][]string{}
	var names []string
	for _, d := range docs {
		if d.name == nil || byName[d.app.Metadata.Name] != d {
			continue
		}
		name := d.app.Metadata.Name
		names = append(names, name)
		for _, dep := range d.app.Spec.DependsOn {
			if _, ok := byName[dep.App]; ok && dep.App != name {
				edges[name] = append(edges[name], dep.App)
			}
		}
	}
	slices.Sort(names)
	comp := stronglyConnected(names, edges)
	var out [][]string
	for _, name := range names {
		if c := comp[name]; c.size > 1 {
			out = append(out, shortestCycle(name, edges, comp))
		}
	}
	return out
}

type component struct{ id, size int }

// stronglyConnected is Tarjan's algorithm, iterative so that a chain of
// thousands of apps does not grow the goroutine stack.
func stronglyConnected(names []string, edges map[string][]string) map[string]component {
	index, low := map[string]int{}, map[string]int{}
	onStack := map[string]bool{}
	var stack []string
	comp := map[string]component{}
	next, compID := 0, 0
	type frame struct {
		name string
		edge int
	}
	for _, root := range names {
		if _, seen := index[root]; seen {
			continue
		}
		calls := []frame{{name: root}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, root)
		onStack[root] = true
		for len(calls) > 0 {
			f := &calls[len(calls)-1]
			if f.edge < len(edges[f.name]) {
				w := edges[f.name][f.edge]
				f.edge++
				if _, seen := index[w]; !seen {
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					calls = append(calls, frame{name: w})
				} else if onStack[w] {
					low[f.name] = min(low[f.name], index[w])
				}
				continue
			}
			v := f.name
			calls = calls[:len(calls)-1]
			if len(calls) > 0 {
				parent := calls[len(calls)-1].name
				low[parent] = min(low[parent], low[v])
			}
			if low[v] != index[v] {
				continue
			}
			var members []string
			for {
				w := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				onStack[w] = false
				members = append(members, w)
				if w == v {
					break
				}
			}
			for _, m := range members {
				comp[m] = component{id: compID, size: len(members)}
			}
			compID++
		}
	}
	return comp
}

// shortestCycle is the shortest path from start back to itself within
// its strongly connected component, as names, start at both ends.
func shortestCycle(start string, edges map[string][]string, comp map[string]component) []string {
	prev := map[string]string{}
	queue := []string{start}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, w := range edges[v] {
			if comp[w].id != comp[start].id {
				continue
			}
			if w == start {
				path := []string{start}
				for at := v; at != start; at = prev[at] {
					path = append(path, at)
				}
				path = append(path, start)
				slices.Reverse(path[1 : len(path)-1])
				return path
			}
			if _, seen := prev[w]; !seen {
				prev[w] = v
				queue = append(queue, w)
			}
		}
	}
	return []string{start, start}
}
