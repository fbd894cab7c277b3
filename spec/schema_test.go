package spec

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(Schema(), &s); err != nil {
		t.Fatalf("schema.json is not JSON: %v", err)
	}
	return s
}

// jsonFields lists a struct's JSON field names in declaration order.
func jsonFields(typ reflect.Type) []string {
	var names []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "-" && f.IsExported() {
			names = append(names, name)
		}
	}
	return names
}

// The schema is written by hand for editors, so this keeps it from drifting
// from types.go: every field is in it, nothing else is, and the shapes match.
func TestSchemaMatchesTypes(t *testing.T) {
	root := loadSchema(t)
	defs, _ := root["$defs"].(map[string]any)
	var walk func(typ reflect.Type, node map[string]any, path string)
	walk = func(typ reflect.Type, node map[string]any, path string) {
		if ref, ok := node["$ref"].(string); ok {
			def, ok := defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
			if !ok {
				t.Errorf("%s: dangling $ref %s", path, ref)
				return
			}
			node = def
		}
		if typ == reflect.TypeFor[Duration]() {
			if node["type"] != "string" || node["pattern"] == nil {
				t.Errorf("%s: a duration must be a string with a pattern", path)
			}
			return
		}
		switch typ.Kind() {
		case reflect.Pointer:
			walk(typ.Elem(), node, path)
		case reflect.Struct:
			if node["type"] != "object" || node["additionalProperties"] != false {
				t.Errorf("%s: want type object and additionalProperties false", path)
			}
			props, _ := node["properties"].(map[string]any)
			var keys []string
			for k := range props {
				keys = append(keys, k)
			}
			want := jsonFields(typ)
			slices.Sort(keys)
			sorted := slices.Sorted(slices.Values(want))
			if !slices.Equal(keys, sorted) {
				t.Errorf("%s: schema properties %v, struct fields %v", path, keys, sorted)
			}
			for f := range typ.Fields() {
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				sub, ok := props[name].(map[string]any)
				if !ok {
					continue
				}
				if sub["description"] == nil {
					t.Errorf("%s.%s: no description", path, name)
				}
				walk(f.Type, sub, path+"."+name)
			}
		case reflect.Slice:
			if node["type"] != "array" {
				t.Errorf("%s: want type array, got %v", path, node["type"])
			}
			items, _ := node["items"].(map[string]any)
			walk(typ.Elem(), items, path+"[]")
		case reflect.Map:
			if node["type"] != "object" {
				t.Errorf("%s: want type object, got %v", path, node["type"])
			}
			elem, ok := node["additionalProperties"].(map[string]any)
			if !ok {
				t.Errorf("%s: a map needs an additionalProperties schema", path)
				return
			}
			walk(typ.Elem(), elem, path+"{}")
		case reflect.String:
			if !typeIs(node, "string") {
				t.Errorf("%s: want type string, got %v", path, node["type"])
			}
		case reflect.Int:
			if node["type"] != "integer" {
				t.Errorf("%s: want type integer, got %v", path, node["type"])
			}
		case reflect.Bool:
			if node["type"] != "boolean" {
				t.Errorf("%s: want type boolean, got %v", path, node["type"])
			}
		default:
			t.Errorf("%s: no schema check for %v", path, typ)
		}
	}
	app := reflect.TypeFor[App]()
	walk(app, root, "App")
}

// typeIs accepts "string" or a list of types that includes it, as limits
// take plain numbers too.
func typeIs(node map[string]any, want string) bool {
	switch v := node["type"].(type) {
	case string:
		return v == want
	case []any:
		return slices.Contains(v, any(want))
	}
	return false
}

// The decoder's field tables are the allow-lists for "unknown field"; they
// must list exactly the struct fields.
func TestFieldTablesMatchTypes(t *testing.T) {
	tests := []struct {
		typ    reflect.Type
		fields []string
	}{
		{reflect.TypeFor[App](), appFields},
		{reflect.TypeFor[Metadata](), metadataFields},
		{reflect.TypeFor[AppSpec](), appSpecFields},
		{reflect.TypeFor[System](), systemFields},
		{reflect.TypeFor[Limits](), limitsFields},
		{reflect.TypeFor[Container](), containerFields},
		{reflect.TypeFor[Volume](), volumeFields},
		{reflect.TypeFor[Healthcheck](), healthcheckFields},
		{reflect.TypeFor[Update](), updateFields},
	}
	for _, tt := range tests {
		if got := jsonFields(tt.typ); !slices.Equal(got, tt.fields) {
			t.Errorf("%v: struct fields %v, decoder allows %v", tt.typ, got, tt.fields)
		}
	}
}

// schemaPattern digs a pattern out of the schema by property path.
func schemaPattern(t *testing.T, root map[string]any, path ...string) *regexp.Regexp {
	t.Helper()
	node := root
	for _, p := range path {
		next, ok := node[p].(map[string]any)
		if !ok {
			t.Fatalf("schema has no %s", strings.Join(path, "/"))
		}
		node = next
	}
	pat, _ := node["pattern"].(string)
	re, err := regexp.Compile(pat)
	if err != nil {
		t.Fatalf("%s: pattern does not compile: %v", strings.Join(path, "/"), err)
	}
	return re
}

// Editors and the loader should agree on what is valid, at least on the
// values people really write.
func TestSchemaPatternsAgreeWithLoader(t *testing.T) {
	root := loadSchema(t)
	props := func(p ...string) []string {
		var out []string
		for _, s := range p {
			out = append(out, "properties", s)
		}
		return out
	}
	name := schemaPattern(t, root, props("metadata", "name")...)
	memory := schemaPattern(t, root, props("spec", "system", "limits", "memory")...)
	cpu := schemaPattern(t, root, props("spec", "system", "limits", "cpu")...)
	image := schemaPattern(t, root, props("spec", "container", "image")...)
	duration := schemaPattern(t, root, "$defs", "duration")

	for _, s := range []string{"web", "a", "web-2", "a1-b2", "Web", "1web", "web-", "-web", "we_b", ""} {
		if got, want := name.MatchString(s), checkName(s, 0) == ""; got != want {
			t.Errorf("name %q: schema %v, loader %v", s, got, want)
		}
	}
	for _, s := range []string{"512MiB", "2GiB", "1GB", "100MB", "1024kB", "1073741824", "50%", "512M", "1.5GiB", "512 MiB", "mib", "1KB"} {
		if got, want := memory.MatchString(s), checkMemory(s) == ""; got != want {
			t.Errorf("memory %q: schema %v, loader %v", s, got, want)
		}
	}
	for _, s := range []string{"1", "16", "0-3", "0,2", "0-3,8-11", "1.5", "a", "0-", ",1"} {
		if got, want := cpu.MatchString(s), checkCPU(s) == ""; got != want {
			t.Errorf("cpu %q: schema %v, loader %v", s, got, want)
		}
	}
	for _, s := range []string{"5s", "2m", "1h30m", "1.5s", "300ms", "5", "soon", "5 s", "-5s"} {
		_, msg := parseDuration(s, MinHealthcheckDuration, MaxDuration)
		if got, want := duration.MatchString(s), msg == ""; got != want {
			t.Errorf("duration %q: schema %v, loader %v", s, got, want)
		}
	}
	digest := "@sha256:" + strings.Repeat("ab", 32)
	for _, s := range []string{"nginx", "nginx:1.25", "library/nginx", "registry.example:5000/team/web:1.0" + digest,
		"localhost/cron:latest", "nginx" + digest, "Nginx", "nginx:", "nginx@sha256:abc", "a//b", "team/Web:1",
		"[::1]:5000/foo:1", "[2001:db8::1]/team/app" + digest} {
		if got, want := image.MatchString(s), checkImageRef(s, false) == ""; got != want {
			t.Errorf("image %q: schema %v, loader %v", s, got, want)
		}
	}
}

// The schema's maxima are the loader's limits.
func TestSchemaMaximaMatchLimits(t *testing.T) {
	root := loadSchema(t)
	node := func(path ...string) map[string]any {
		n := root
		for _, p := range path {
			n, _ = n["properties"].(map[string]any)[p].(map[string]any)
			if n == nil {
				t.Fatalf("schema has no %v", path)
			}
		}
		return n
	}
	for _, tt := range []struct {
		path []string
		want int
	}{
		{[]string{"spec", "replicas"}, MaxReplicas},
		{[]string{"spec", "update", "maxUnavailable"}, MaxReplicas},
		{[]string{"spec", "container", "healthcheck", "retries"}, MaxHealthcheckRetries},
	} {
		if got, _ := node(tt.path...)["maximum"].(float64); got != float64(tt.want) {
			t.Errorf("%v: schema maximum %v, loader %d", tt.path, got, tt.want)
		}
	}
}
