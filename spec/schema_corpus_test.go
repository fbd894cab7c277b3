package spec

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// compileSchema compiles schema.json with a JSON Schema 2020-12
// validator, as editors (yaml-language-server) use it.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema()))
	if err != nil {
		t.Fatal(err)
	}
	id, _ := doc.(map[string]any)["$id"].(string)
	c := jsonschema.NewCompiler()
	if err := c.AddResource(id, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(id)
	if err != nil {
		t.Fatalf("schema.json does not compile: %v", err)
	}
	return s
}

// schemaAccepts reports whether the schema accepts a YAML document, read
// the way an editor hands it over: as the JSON value it stands for.
func schemaAccepts(t *testing.T, s *jsonschema.Schema, src string) (bool, error) {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(src), &v); err != nil {
		t.Fatalf("corpus document is not YAML: %v\n%s", err, src)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("corpus document has no JSON form: %v\n%s", err, src)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Validate(inst)
	return err == nil, err
}

// corpusFiles are the repository files the corpus's provisions read.
var corpusFiles = fstest.MapFS{"etc/motd": {Data: []byte("hi\n")}}

// schemaCorpus are specs, good and bad, that the schema can judge on its
// own: validate and the schema must agree on each.
var schemaCorpus = []struct {
	name string
	src  string
}{
	{"minimal", minimal},
	{"full", `apiVersion: berth/v1
kind: App
metadata: {name: web}
spec:
  replicas: 3
  system:
    image: images:debian/12/cloud
    profiles: [default, berth-test]
    limits: {cpu: "0-3", memory: 512MiB}
    config: {security.nesting: "true"}
    devices: {data: {type: disk, source: /srv/web, path: /data}}
    cloudInit: "#cloud-config\n"
    ephemeral: false
    imageUpdate: manual
    provision:
      files: [{source: etc/motd, path: /etc/motd, mode: "0644", owner: "0:0"}]
      run: [/bin/true]
      timeout: 10m
      every: 24h
      restartContainer: true
    placement: {members: [m1, m2], group: fast, replaceUnreachable: 10m}
  container:
    image: 127.0.0.1:5000/berth/hello:1
    command: [/hello, --port, "8080"]
    env: {PORT: "8080"}
    user: "65534:65534"
    volumes: [{source: /srv/web, target: /data, readOnly: true}]
    healthcheck: {test: [CMD-SHELL, "wget -qO- http://127.0.0.1:8080/"], interval: 5s, timeout: 2s, startPeriod: 1m30s, retries: 3}
    ports: [{name: http, port: 8080, protocol: tcp}]
  update: {maxUnavailable: 2, healthTimeout: 2m, snapshot: true, drainDelay: 0s}
`},
	{"system-only", plain("    ports: [{name: ssh, port: 22}]\n    provision: {run: [/bin/true], every: \"0\"}\n")},
	{"replicas zero", minimal + "  replicas: 0\n"},
	{"replicas over the limit", minimal + "  replicas: 1001\n"},
	{"replicas negative", minimal + "  replicas: -1\n"},
	{"replicas quoted", minimal + "  replicas: \"3\"\n"},
	{"unknown field", minimal + "  replica: 3\n"},
	{"name with uppercase", strings.Replace(minimal, "name: web", "name: Web", 1)},
	{"system image fingerprint", strings.Replace(minimal, "image: debian", "image: "+strings.Repeat("ab", 32), 1)},
	{"system image empty remote", strings.Replace(minimal, "image: debian", `image: ":x"`, 1)},
	{"system image empty alias", strings.Replace(minimal, "image: debian", `image: "x:"`, 1)},
	{"system image two colons", strings.Replace(minimal, "image: debian", "image: a:b:c", 1)},
	{"system image with a space", strings.Replace(minimal, "image: debian", `image: "deb ian"`, 1)},
	{"system image with a tab", strings.Replace(minimal, "image: debian", `image: "deb\tian"`, 1)},
	{"user uid", minimal + "    user: \"65534\"\n"},
	{"user name:group", minimal + "    user: app:app\n"},
	{"user with an empty group", minimal + "    user: \"root:\"\n"},
	{"user with an empty name", minimal + "    user: \":1000\"\n"},
	{"user with two colons", minimal + "    user: a:b:c\n"},
	{"user with a space", minimal + "    user: \"a b\"\n"},
	{"user empty", minimal + "    user: \"\"\n"},
	{"healthTimeout with a plus", minimal + "  update: {healthTimeout: +5s}\n"},
	{"interval with a plus", minimal + "    healthcheck: {test: [NONE], interval: +1m}\n"},
	{"replaceUnreachable with a plus", sys("    placement: {replaceUnreachable: +5m}\n")},
	{"provision timeout with a plus", sys("    provision: {run: [x], timeout: +5s}\n")},
	{"every with a plus", sys("    provision: {run: [x], every: +1h}\n")},
	{"drainDelay with a plus", minimal + "  update: {drainDelay: +5s}\n"},
	{"drainDelay zero with a plus", minimal + "  update: {drainDelay: +0s}\n"},
	{"duration negative", minimal + "  update: {healthTimeout: -5s}\n"},
	{"duration without a unit", minimal + "  update: {healthTimeout: \"5\"}\n"},
	{"duration as a word", minimal + "  update: {healthTimeout: soon}\n"},
	{"duration as a number", minimal + "  update: {healthTimeout: 5}\n"},
	{"duration with a space", minimal + "  update: {healthTimeout: 5 s}\n"},
	{"duration fractional", minimal + "  update: {healthTimeout: 1.5m}\n"},
	{"duration in micro", minimal + "    healthcheck: {test: [NONE], interval: 5000µs}\n"},
	{"drainDelay zero", minimal + "  update: {drainDelay: \"0\"}\n"},
	{"drainDelay negative", minimal + "  update: {drainDelay: -1s}\n"},
	{"maxUnavailable percentage", minimal + "  update: {maxUnavailable: 25%}\n"},
	{"maxUnavailable 100%", minimal + "  update: {maxUnavailable: \"100%\"}\n"},
	{"maxUnavailable 1%", minimal + "  update: {maxUnavailable: 1%}\n"},
	{"maxUnavailable 0%", minimal + "  update: {maxUnavailable: 0%}\n"},
	{"maxUnavailable 101%", minimal + "  update: {maxUnavailable: 101%}\n"},
	{"maxUnavailable percentage with a leading zero", minimal + "  update: {maxUnavailable: 025%}\n"},
	{"maxUnavailable fractional percentage", minimal + "  update: {maxUnavailable: 2.5%}\n"},
	{"maxUnavailable percentage with a space", minimal + "  update: {maxUnavailable: 25 %}\n"},
	{"maxUnavailable percentage with trailing garbage", minimal + "  update: {maxUnavailable: 25%x}\n"},
	{"maxUnavailable percentage with leading garbage", minimal + "  update: {maxUnavailable: x25%}\n"},
	{"maxUnavailable quoted number", minimal + "  update: {maxUnavailable: \"2\"}\n"},
	{"maxUnavailable word", minimal + "  update: {maxUnavailable: all}\n"},
	{"maxUnavailable zero", minimal + "  update: {maxUnavailable: 0}\n"},
	{"maxUnavailable over the limit", minimal + "  update: {maxUnavailable: 1001}\n"},
	{"port zero", ports("[{name: http, port: 0}]")},
	{"port too large", ports("[{name: http, port: 65536}]")},
	{"port name uppercase", ports("[{name: HTTP, port: 80}]")},
	{"port name too long", ports("[{name: abcdefghijklmnop, port: 80}]")},
	{"protocol sctp", ports("[{name: http, port: 80, protocol: sctp}]")},
	{"memory percentage", sys("    limits: {memory: 50%}\n")},
	{"memory as bytes", sys("    limits: {memory: 1073741824}\n")},
	{"memory without B", sys("    limits: {memory: 512M}\n")},
	{"cpu as a number", sys("    limits: {cpu: 2}\n")},
	{"cpu as a word", sys("    limits: {cpu: two}\n")},
	{"config reserved key", sys("    config: {user.berth.owner: x}\n")},
	{"config derived key", sys("    config: {limits.cpu: \"1\"}\n")},
	{"config boolean value", sys("    config: {security.nesting: true}\n")},
	{"device without a type", sys("    devices: {data: {source: /srv, path: /srv}}\n")},
	{"env name with a dash", minimal + "    env: {HTTP-PORT: \"80\"}\n"},
	{"env number value", minimal + "    env: {PORT: 80}\n"},
	{"volume relative source", minimal + "    volumes: [{source: data, target: /data}]\n"},
	{"healthcheck unknown word", minimal + "    healthcheck: {test: [RUN, x]}\n"},
	{"healthcheck empty test", minimal + "    healthcheck: {test: []}\n"},
	{"retries over the limit", minimal + "    healthcheck: {test: [NONE], retries: 101}\n"},
	{"container image uppercase", strings.Replace(minimal, "image: nginx", "image: Nginx", 1)},
	{"container image digest", strings.Replace(minimal, "image: nginx", "image: nginx@sha256:"+strings.Repeat("ab", 32), 1)},
	{"imageUpdate unknown", sys("    imageUpdate: sometimes\n")},
	{"provision empty", sys("    provision: {}\n")},
	{"provision mode not octal", sys("    provision: {files: [{source: etc/motd, path: /etc/motd, mode: \"0999\"}]}\n")},
	{"provision owner too large", sys("    provision: {files: [{source: etc/motd, path: /etc/motd, owner: \"70000:0\"}]}\n")},
	{"provision relative path", sys("    provision: {files: [{source: etc/motd, path: etc/motd}]}\n")},
	{"provision source with ..", sys("    provision: {files: [{source: ../motd, path: /etc/motd}]}\n")},
	{"provision run empty argument", sys("    provision: {run: [\"\"]}\n")},
	{"every as a word", sys("    provision: {run: [x], every: daily}\n")},
	{"placement spread unknown", sys("    placement: {spread: racks}\n")},
	{"placement member with a slash", sys("    placement: {members: [a/b]}\n")},
	{"missing system", "apiVersion: berth/v1\nkind: App\nmetadata: {name: web}\nspec: {}\n"},
	{"wrong kind", strings.Replace(minimal, "kind: App", "kind: Job", 1)},
}

// Editors check specs with schema.json, berth with validate. On every spec
// of the corpus they must give the same answer: a schema that refuses what
// validate accepts marks a good spec red in the editor, and one that
// accepts what validate refuses lets a bad spec through to review.
func TestSchemaAndValidateAgree(t *testing.T) {
	s := compileSchema(t)
	for _, tt := range schemaCorpus {
		schemaOK, schemaErr := schemaAccepts(t, s, tt.src)
		r := loadWithFiles(t, tt.src, corpusFiles, Options{})
		validateOK := len(r.Diagnostics) == 0 && len(r.Apps) == 1
		if schemaOK != validateOK {
			t.Errorf("%s: schema accepts %v (%v), validate accepts %v (%v)\n%s", tt.name, schemaOK, schemaErr, validateOK, r.Diagnostics, tt.src)
		}
	}
}

// What the schema cannot say — bounds that depend on other fields,
// numbers of a duration, files in the repository, isolation rules — it
// leaves to validate: on these the schema accepts and validate refuses,
// never the other way round.
func TestSchemaIsLooserOnlyWhereItCannotSay(t *testing.T) {
	s := compileSchema(t)
	for _, tt := range []struct{ name, src string }{
		{"duration too long", minimal + "  update: {healthTimeout: 25h}\n"},
		{"every too short", sys("    provision: {run: [x], every: 30s}\n")},
		{"name too long for its replicas", strings.Replace(minimal, "name: web", "name: "+strings.Repeat("a", 61), 1) + "  replicas: 11\n"},
		{"port names repeated", ports("[{name: http, port: 80}, {name: http, port: 81}]")},
		{"system ports with a container", sys("    ports: [{name: ssh, port: 22}]\n")},
		{"snapshot of an ephemeral replica", sys("    ephemeral: true\n") + "  update: {snapshot: true}\n"},
		{"privileged", sys("    config: {security.privileged: \"true\"}\n")},
		{"disk of /var", sys("    devices: {v: {type: disk, source: /var, path: /v}}\n")},
		{"provision source missing", sys("    provision: {files: [{source: etc/none, path: /etc/none}]}\n")},
		{"integer with a leading zero", minimal + "  replicas: 010\n"},
		{"NUL byte", minimal + "    env: {A: \"a\\0\"}\n"},
	} {
		schemaOK, schemaErr := schemaAccepts(t, s, tt.src)
		r := loadWithFiles(t, tt.src, corpusFiles, Options{})
		if !schemaOK {
			t.Errorf("%s: the schema refuses it (%v); move it to schemaCorpus", tt.name, schemaErr)
		}
		if len(r.Diagnostics) == 0 {
			t.Errorf("%s: validate accepts it", tt.name)
		}
	}
}
