package spec

import (
	"encoding/json"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"
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

// jsonField returns the field of a struct with the JSON name.
func jsonField(typ reflect.Type, name string) reflect.StructField {
	for f := range typ.Fields() {
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
			return f
		}
	}
	panic("no field " + name + " in " + typ.String())
}

// decoderTable is one of the decoder's field tables (app.go) with its Go
// type, so the test can walk the types and find the table of each.
type decoderTable struct {
	varName string
	typ     reflect.Type
	names   []string
	fields  map[string]decoderField
}

type decoderField struct {
	required, isInt, hasDecode bool
	min, max                   int
	enum                       []string
}

func tableOf[T any](varName string, fs fields[T]) decoderTable {
	tb := decoderTable{varName: varName, typ: reflect.TypeFor[T](), names: fs.names(), fields: map[string]decoderField{}}
	for _, f := range fs {
		tb.fields[f.name] = decoderField{required: f.required, isInt: f.isInt, hasDecode: f.decode != nil,
			min: f.min, max: f.max, enum: f.enum}
	}
	return tb
}

// decoderTables are all of them; a struct type of the App without one here
// fails TestSpecFieldsAgree.
var decoderTables = []decoderTable{
	tableOf("appFields", appFields),
	tableOf("metadataFields", metadataFields),
	tableOf("appSpecFields", appSpecFields),
	tableOf("systemFields", systemFields),
	tableOf("limitsFields", limitsFields),
	tableOf("containerFields", containerFields),
	tableOf("volumeFields", volumeFields),
	tableOf("healthcheckFields", healthcheckFields),
	tableOf("portFields", portFields),
	tableOf("updateFields", updateFields),
	tableOf("provisionFields", provisionFields),
	tableOf("provisionFileFields", provisionFileFields),
	tableOf("placementFields", placementFields),
	tableOf("secretFileFields", secretFileFields),
	tableOf("systemVolumeFields", systemVolumeFields),
	tableOf("volumeSnapshotFields", volumeSnapshotFields),
	tableOf("dependencyFields", dependencyFields),
}

// anyOf is the alternatives of a schema node.
func anyOf(node map[string]any) []map[string]any {
	list, _ := node["anyOf"].([]any)
	var out []map[string]any
	for _, x := range list {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// outputFields are JSON fields berth computes while loading: they are in
// the Go type (and so in JSON output) but neither read from a spec nor in
// schema.json.
var outputFields = map[reflect.Type][]string{
	reflect.TypeFor[ProvisionFile](): {"digest"},
}

// stringsOf reads a JSON list of strings; ok is false if v is not one.
func stringsOf(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

// The spec is described three times: the Go types (types.go), the
// decoder's field tables (app.go) and schema.json, which is written by hand
// for editors. This walks the three together from App down and fails,
// naming the field, when a field is in one or two of them but not in all
// three, or when they disagree on a field: its shape, whether it is
// required, the bounds of an integer, the values of an enum.
func TestSpecFieldsAgree(t *testing.T) {
	root := loadSchema(t)
	defs, _ := root["$defs"].(map[string]any)
	tables := map[reflect.Type]decoderTable{}
	for _, tb := range decoderTables {
		tables[tb.typ] = tb
	}
	visited := map[reflect.Type]bool{}

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
		if typ == reflect.TypeFor[IntOrPercent]() {
			// Bounded as an integer (checkBounds); a string must be a
			// percentage.
			if !typeIs(node, "integer") || !typeIs(node, "string") || node["pattern"] == nil {
				t.Errorf("%s: a number or percentage must be an integer or a string with a pattern", path)
			}
			return
		}
		if typ == reflect.TypeFor[MinReady]() {
			alts := anyOf(node)
			if len(alts) != 2 || alts[0]["type"] != "integer" || alts[1]["type"] != "string" {
				t.Errorf("%s: minReady must be anyOf an integer and a string enum", path)
			}
			return
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
			walkStruct(t, typ, node, path, tables, visited, walk)
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
	walk(reflect.TypeFor[App](), root, "App")
	for _, tb := range decoderTables {
		if !visited[tb.typ] {
			t.Errorf("decoder table %s (%v) is not reached from App", tb.varName, tb.typ)
		}
	}
}

// walkStruct compares one struct type with its decoder table and its schema
// object, then walks each field found in all three.
func walkStruct(t *testing.T, typ reflect.Type, node map[string]any, path string,
	tables map[reflect.Type]decoderTable, visited map[reflect.Type]bool,
	walk func(reflect.Type, map[string]any, string)) {
	if node["type"] != "object" || node["additionalProperties"] != false {
		t.Errorf("%s: want type object and additionalProperties false in schema.json", path)
	}
	tb, ok := tables[typ]
	if !ok {
		t.Errorf("%s: the decoder has no field table for %v (add one to app.go and to decoderTables)", path, typ)
		return
	}
	visited[typ] = true
	props, _ := node["properties"].(map[string]any)
	var goFields []string
	for _, n := range jsonFields(typ) {
		if !slices.Contains(outputFields[typ], n) {
			goFields = append(goFields, n)
		} else if _, read := tb.fields[n]; read || props[n] != nil {
			t.Errorf("%s.%s: computed by the loader, so neither the decoder's %s nor schema.json may have it", path, n, tb.varName)
		}
	}
	if len(tb.names) == len(goFields) && !slices.Equal(tb.names, goFields) && slices.Equal(slices.Sorted(slices.Values(tb.names)), slices.Sorted(slices.Values(goFields))) {
		t.Errorf("%s: decoder table %s lists %v, the Go type %v: keep one order", path, tb.varName, tb.names, goFields)
	}

	// Every name in any of the three must be in all three.
	all := map[string]bool{}
	for _, n := range goFields {
		all[n] = true
	}
	for _, n := range tb.names {
		all[n] = true
	}
	for n := range props {
		all[n] = true
	}
	schemaRequired, _ := stringsOf(node["required"])
	if node["required"] != nil && schemaRequired == nil {
		t.Errorf("%s: schema required is not a list of strings", path)
	}
	for _, name := range slices.Sorted(maps.Keys(all)) {
		fpath := path + "." + name
		var missing []string
		if !slices.Contains(goFields, name) {
			missing = append(missing, fmt.Sprintf("the Go type %v (json tag)", typ))
		}
		df, inDecoder := tb.fields[name]
		if !inDecoder {
			missing = append(missing, "the decoder's "+tb.varName)
		}
		sub, inSchema := props[name].(map[string]any)
		if !inSchema {
			missing = append(missing, "schema.json")
		}
		if len(missing) > 0 {
			t.Errorf("%s: field is missing from %s", fpath, strings.Join(missing, " and "))
			continue
		}
		f := jsonField(typ, name)
		if !df.hasDecode {
			t.Errorf("%s: the decoder's %s has no decode function", fpath, tb.varName)
		}
		if sub["description"] == nil {
			t.Errorf("%s: no description in schema.json", fpath)
		}
		if inReq := slices.Contains(schemaRequired, name); inReq != df.required {
			t.Errorf("%s: required in schema.json %v, in the decoder's %s %v", fpath, inReq, tb.varName, df.required)
		}
		checkBounds(t, fpath, f.Type, df, sub, tb.varName)
		walk(f.Type, sub, fpath)
	}
}

// checkBounds compares an integer's bounds and a string's enum.
func checkBounds(t *testing.T, path string, typ reflect.Type, df decoderField, sub map[string]any, varName string) {
	if typ == reflect.TypeFor[MinReady]() {
		// A number or a word: JSON Schema needs the two as alternatives,
		// as an enum would apply to the numbers too.
		merged := map[string]any{}
		for _, alt := range anyOf(sub) {
			maps.Copy(merged, alt)
		}
		sub = merged
	}
	switch {
	case typ.Kind() == reflect.Int && !df.isInt:
		t.Errorf("%s: an integer the decoder's %s reads without bounds (use intField)", path, varName)
	case df.isInt:
		lo, hasLo := sub["minimum"].(float64)
		hi, hasHi := sub["maximum"].(float64)
		if !hasLo || !hasHi || lo != float64(df.min) || hi != float64(df.max) {
			t.Errorf("%s: schema.json minimum/maximum %v/%v, the decoder's %s %d/%d",
				path, sub["minimum"], sub["maximum"], varName, df.min, df.max)
		}
	}
	enum, hasEnum := stringsOf(sub["enum"])
	if sub["enum"] != nil && !hasEnum {
		t.Errorf("%s: schema enum is not a list of strings", path)
	}
	if !slices.Equal(enum, df.enum) {
		t.Errorf("%s: schema.json enum %v, the decoder's %s %v", path, enum, varName, df.enum)
	}
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

// The words a healthcheck test may start with are the schema's enum.
func TestHealthTestKindsMatchSchema(t *testing.T) {
	root := loadSchema(t)
	node := root
	for _, p := range []string{"spec", "container", "healthcheck", "test"} {
		node, _ = node["properties"].(map[string]any)[p].(map[string]any)
		if node == nil {
			t.Fatalf("schema has no healthcheck test")
		}
	}
	prefix, _ := node["prefixItems"].([]any)
	if len(prefix) != 1 {
		t.Fatalf("healthcheck test: want one prefixItems entry, got %v", node["prefixItems"])
	}
	first, _ := prefix[0].(map[string]any)
	enum, _ := stringsOf(first["enum"])
	var words []string
	for _, k := range healthTestKinds {
		words = append(words, k.word)
	}
	if !slices.Equal(enum, words) {
		t.Errorf("healthcheck test: schema.json enum %v, the decoder's healthTestKinds %v", enum, words)
	}
}

// The schema's defaults are what the loader fills in.
func TestSchemaDefaultsMatchLoader(t *testing.T) {
	r := loadWithFiles(t, `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  system:
    image: ubuntu/24.04
    provision: {files: [{source: etc/motd, path: /etc/motd}]}
    placement: {}
  container:
    image: nginx
    volumes: [{source: /a, target: /b}]
    healthcheck: {test: [NONE]}
    ports: [{name: http, port: 8080}]
`, fstest.MapFS{"etc/motd": {Data: []byte("hi\n")}}, Options{})
	if len(r.Apps) != 1 {
		t.Fatalf("does not load: %v", r.Diagnostics)
	}
	b, err := json.Marshal(r.Apps[0])
	if err != nil {
		t.Fatal(err)
	}
	var loaded map[string]any
	if err := json.Unmarshal(b, &loaded); err != nil {
		t.Fatal(err)
	}
	checked := 0
	var walk func(node map[string]any, value any, path string)
	walk = func(node map[string]any, value any, path string) {
		if def, ok := node["default"]; ok {
			checked++
			got := value
			if got == nil {
				// Left out of the JSON by omitempty: the zero value.
				got = reflect.Zero(reflect.TypeOf(def)).Interface()
			}
			if node["$ref"] == "#/$defs/duration" {
				want, _ := time.ParseDuration(def.(string))
				have, _ := time.ParseDuration(fmt.Sprint(got))
				if want != have {
					t.Errorf("%s: schema default %v, loader %v", path, def, got)
				}
			} else if !reflect.DeepEqual(got, def) {
				t.Errorf("%s: schema default %v, loader %v", path, def, got)
			}
		}
		if props, ok := node["properties"].(map[string]any); ok {
			obj, _ := value.(map[string]any)
			for name, sub := range props {
				walk(sub.(map[string]any), obj[name], path+"."+name)
			}
		}
		if items, ok := node["items"].(map[string]any); ok {
			if list, _ := value.([]any); len(list) > 0 {
				walk(items, list[0], path+"[0]")
			}
		}
	}
	walk(loadSchema(t), loaded, "App")
	if checked < 12 {
		t.Errorf("checked %d defaults; the schema has at least 12", checked)
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
	portName := schemaPattern(t, root, append(props("spec", "container", "ports"), "items", "properties", "name")...)
	drainDelay := schemaPattern(t, root, props("spec", "update", "drainDelay")...)
	percent := schemaPattern(t, root, props("spec", "update", "maxUnavailable")...)

	for _, s := range []string{"1%", "25%", "99%", "100%", "0%", "101%", "025%", "25", "25 %", " 25%", "25%x", "x25%", "%25", "2.5%", "-5%", "+5%", "%", ""} {
		_, msg := parsePercent(s)
		if got, want := percent.MatchString(s), msg == ""; got != want {
			t.Errorf("maxUnavailable %q: schema %v, loader %v", s, got, want)
		}
	}
	for _, s := range []string{"web", "a", "web-2", "a1-b2", "Web", "1web", "web-", "-web", "we_b", ""} {
		if got, want := name.MatchString(s), checkName(s, 0, false) == ""; got != want {
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
	for _, s := range []string{"http", "a", "h2c", "1-a", "web-ui", "abcdefghijklmno", "", "8080", "-a", "a-", "a--b", "HTTP", "a_b"} {
		// maxLength 15 is the schema's length bound.
		if got, want := portName.MatchString(s), checkPortName(s) == ""; got != want {
			t.Errorf("port name %q: schema %v, loader %v", s, got, want)
		}
	}
	for _, s := range []string{"0", "0s", "0ms", "5s", "1m30s", "10m", "1.5s", "5", "-1s", "soon", "-0s", "0 s"} {
		loads := isZeroDuration(s)
		if !loads {
			_, msg := parseDuration(s, MinHealthcheckDuration, MaxDrainDelay)
			loads = msg == ""
		}
		if got := drainDelay.MatchString(s); got != loads {
			t.Errorf("drainDelay %q: schema %v, loader %v", s, got, loads)
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
	ports := node("spec", "container", "ports")
	if got, _ := ports["maxItems"].(float64); got != MaxPorts {
		t.Errorf("ports: schema maxItems %v, loader %d", got, MaxPorts)
	}
	port, _ := ports["items"].(map[string]any)["properties"].(map[string]any)["port"].(map[string]any)
	if got, _ := port["maximum"].(float64); got != MaxPort {
		t.Errorf("ports[].port: schema maximum %v, loader %d", got, MaxPort)
	}
	name, _ := ports["items"].(map[string]any)["properties"].(map[string]any)["name"].(map[string]any)
	if got, _ := name["maxLength"].(float64); got != maxPortName {
		t.Errorf("ports[].name: schema maxLength %v, loader %d", got, maxPortName)
	}
	dd, _ := node("spec", "update", "drainDelay")["description"].(string)
	if want := "At most " + ShortDuration(MaxDrainDelay); !strings.Contains(dd, want) {
		t.Errorf("drainDelay: description %q does not say %q", dd, want)
	}
	// limits.cpu and limits.memory may be written as plain integers: the
	// schema's bounds on those are the loader's (MaxCPUs, MaxMemory).
	for _, tt := range []struct {
		path  []string
		check func(string) string
	}{
		{[]string{"spec", "system", "limits", "cpu"}, checkCPU},
		{[]string{"spec", "system", "limits", "memory"}, checkMemory},
	} {
		n := node(tt.path...)
		lo, okLo := n["minimum"].(float64)
		hi, okHi := n["maximum"].(float64)
		if !okLo || !okHi {
			t.Errorf("%v: schema needs an integer minimum and maximum", tt.path)
			continue
		}
		loads := func(v float64) bool { return tt.check(strconv.FormatFloat(v, 'f', -1, 64)) == "" }
		if !loads(lo) || loads(lo-1) || !loads(hi) || loads(hi+1) {
			t.Errorf("%v: schema bounds %v..%v are not the loader's", tt.path, lo, hi)
		}
	}
	// Durations are strings, so their bound is in the description.
	desc, _ := root["$defs"].(map[string]any)["duration"].(map[string]any)["description"].(string)
	if want := "at most " + ShortDuration(MaxDuration); !strings.Contains(desc, want) {
		t.Errorf("$defs.duration: description %q does not say %q", desc, want)
	}
}
