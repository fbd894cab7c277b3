package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// The formats, picked by the file name's extension as sops picks them.
const (
	FormatYAML   = "yaml"
	FormatJSON   = "json"
	FormatDotenv = "dotenv"
	FormatINI    = "ini"
	FormatBinary = "binary"
)

// metaKey is the key of SOPS's metadata: a top-level "sops" mapping, or
// flattened "sops_..." keys in a dotenv file.
const metaKey = "sops"

// FormatOf is the format sops uses for a file of that name.
func FormatOf(name string) string {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml":
		return FormatYAML
	case ".json":
		return FormatJSON
	case ".env":
		return FormatDotenv
	case ".ini":
		return FormatINI
	}
	return FormatBinary
}

// load parses a file of the format into a document node (without the
// metadata) and the metadata's node, nil when there is none.
func load(format string, data []byte) (doc, meta *yaml.Node, err error) {
	switch format {
	case FormatYAML:
		doc, err = loadYAML(data)
	case FormatJSON, FormatBinary:
		doc, err = loadJSON(data)
	case FormatDotenv:
		return loadDotenv(data)
	case FormatINI:
		return nil, nil, errors.New("ini files are not supported; use yaml, json or dotenv")
	}
	if err != nil {
		if format == FormatBinary {
			// A binary secret is a JSON envelope; anything else is a
			// plaintext file.
			return nil, nil, nil
		}
		return nil, nil, err
	}
	if m := mappingOf(doc); m != nil {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == metaKey {
				meta = m.Content[i+1]
				m.Content = append(m.Content[:i], m.Content[i+2:]...)
				break
			}
		}
	}
	return doc, meta, nil
}

func loadYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.DocumentNode}, nil
		}
		return nil, fmt.Errorf("not valid YAML: %v", lineOnly(err))
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, errors.New("several YAML documents in one file are not supported")
	}
	if len(doc.Content) > 0 && doc.Content[0].Kind != yaml.MappingNode {
		if doc.Content[0].ShortTag() != "!!null" {
			return nil, errors.New("the document is not a mapping")
		}
		doc.Content = nil
	}
	return &doc, nil
}

// lineOnly keeps a parser error's position, never the text it quotes
// (which may be a plaintext secret).
func lineOnly(err error) string {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		j := i + len("line ")
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		return s[i:j]
	}
	return "syntax error"
}

// loadJSON builds YAML nodes from JSON tokens, numbers typed as SOPS
// types them (int when the integer fits, float otherwise).
func loadJSON(data []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	n, err := jsonValue(dec, 0)
	if err != nil {
		return nil, fmt.Errorf("not valid JSON (at byte %d)", dec.InputOffset())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not valid JSON: data after the top-level value")
	}
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("the JSON document is not an object")
	}
	return &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{n}}, nil
}

func jsonValue(dec *json.Decoder, depth int) (*yaml.Node, error) {
	if depth > 100 {
		return nil, errors.New("too deep")
	}
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := t.(type) {
	case json.Delim:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		if t == '{' {
			n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		for dec.More() {
			if n.Kind == yaml.MappingNode {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k.(string)})
			}
			v, err := jsonValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, v)
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
		return n, nil
	case string:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t}, nil
	case json.Number:
		if _, err := strconv.ParseInt(t.String(), 10, 64); err == nil {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: t.String()}, nil
		}
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: t.String()}, nil
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(t)}, nil
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}, nil
}

// loadDotenv reads KEY=VALUE lines ("\n" in a value is a newline) and
// '#' comment lines, as a mapping whose keys carry the comments before
// them; the metadata is the sops_-prefixed keys, unflattened.
func loadDotenv(data []byte) (doc, meta *yaml.Node, err error) {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	var flat [][2]string
	var comments []string
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case line == "":
		case line[0] == '#':
			comments = append(comments, line)
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, nil, fmt.Errorf("line %d: not KEY=VALUE", i+1)
			}
			v = strings.ReplaceAll(v, `\n`, "\n")
			if rest, isMeta := strings.CutPrefix(k, metaKey+"_"); isMeta {
				flat = append(flat, [2]string{rest, v})
				continue
			}
			kn := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k, HeadComment: strings.Join(comments, "\n")}
			comments = nil
			m.Content = append(m.Content, kn, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v})
		}
	}
	m.FootComment = strings.Join(comments, "\n")
	doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{m}}
	if len(flat) > 0 {
		meta = unflatten(flat)
	}
	return doc, meta, nil
}

// unflatten rebuilds the metadata from SOPS's flattened dotenv keys:
// "age__list_0__map_recipient" is age[0].recipient.
func unflatten(flat [][2]string) *yaml.Node {
	root := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for _, kv := range flat {
		n := root
		toks := flatTokens(kv[0])
		for i, t := range toks {
			last := i == len(toks)-1
			n = flatChild(n, t, last, toks, i)
			if last {
				n.Kind, n.Value = yaml.ScalarNode, kv[1]
				// Booleans and numbers resolve by their text.
				if t.key != "mac_only_encrypted" && t.key != "shamir_threshold" {
					n.Tag = "!!str"
				}
			}
		}
	}
	return root
}

type flatToken struct {
	key   string
	index int
	list  bool
}

func flatTokens(s string) []flatToken {
	var out []flatToken
	cur := flatToken{}
	for {
		im, il := strings.Index(s, "__map_"), strings.Index(s, "__list_")
		next, isList, sep := im, false, len("__map_")
		if il >= 0 && (im < 0 || il < im) {
			next, isList, sep = il, true, len("__list_")
		}
		if next < 0 {
			cur.key = s
			if cur.list {
				cur.index, _ = strconv.Atoi(s)
			}
			return append(out, cur)
		}
		cur.key = s[:next]
		if cur.list {
			cur.index, _ = strconv.Atoi(cur.key)
		}
		out = append(out, cur)
		cur = flatToken{list: isList}
		s = s[next+sep:]
	}
}

func flatChild(n *yaml.Node, t flatToken, last bool, toks []flatToken, i int) *yaml.Node {
	kind := yaml.MappingNode
	if !last && toks[i+1].list {
		kind = yaml.SequenceNode
	}
	if t.list {
		if n.Kind != yaml.SequenceNode {
			n.Kind, n.Tag = yaml.SequenceNode, "!!seq"
		}
		for len(n.Content) <= t.index && t.index < 1000 {
			n.Content = append(n.Content, &yaml.Node{Kind: kind})
		}
		if t.index >= len(n.Content) {
			return &yaml.Node{}
		}
		return n.Content[t.index]
	}
	for j := 0; j+1 < len(n.Content); j += 2 {
		if n.Content[j].Value == t.key {
			return n.Content[j+1]
		}
	}
	c := &yaml.Node{Kind: kind}
	n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: t.key}, c)
	return c
}

// emit writes doc in format, with the metadata when meta is not nil.
func emit(format string, doc *yaml.Node, meta *yaml.Node) ([]byte, error) {
	doc = cloneNode(doc)
	m := mappingOf(doc)
	if m == nil {
		m = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		doc = &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{m}}
	}
	if meta != nil && format != FormatDotenv {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: metaKey}, meta)
	}
	var buf bytes.Buffer
	switch format {
	case FormatYAML:
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(4)
		if err := enc.Encode(doc); err != nil {
			return nil, err
		}
		_ = enc.Close()
	case FormatJSON, FormatBinary:
		emitJSON(&buf, m, "")
		buf.WriteByte('\n')
	case FormatDotenv:
		emitDotenv(&buf, m)
		if meta != nil {
			var flat []string
			flatten(meta, metaKey, &flat)
			for _, l := range flat {
				buf.WriteString(l + "\n")
			}
		}
	default:
		return nil, fmt.Errorf("cannot write %s files", format)
	}
	return buf.Bytes(), nil
}

func emitJSON(buf *bytes.Buffer, n *yaml.Node, indent string) {
	in := indent + "\t"
	switch n.Kind {
	case yaml.MappingNode, yaml.SequenceNode:
		open, shut := "[", "]"
		if n.Kind == yaml.MappingNode {
			open, shut = "{", "}"
		}
		if len(n.Content) == 0 {
			buf.WriteString(open + shut)
			return
		}
		buf.WriteString(open + "\n")
		step := 1
		if n.Kind == yaml.MappingNode {
			step = 2
		}
		for i := 0; i < len(n.Content); i += step {
			buf.WriteString(in)
			if step == 2 {
				buf.Write(jsonString(n.Content[i].Value))
				buf.WriteString(": ")
			}
			emitJSON(buf, n.Content[i+step-1], in)
			if i+step < len(n.Content) {
				buf.WriteByte(',')
			}
			buf.WriteByte('\n')
		}
		buf.WriteString(indent + shut)
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			buf.WriteString(n.Value)
		case "!!bool":
			buf.WriteString(strings.ToLower(n.Value))
		case "!!null":
			buf.WriteString("null")
		default:
			buf.Write(jsonString(n.Value))
		}
	}
}

func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func emitDotenv(buf *bytes.Buffer, m *yaml.Node) {
	comments := func(c string) {
		for _, l := range strings.Split(c, "\n") {
			if l != "" {
				buf.WriteString(l + "\n")
			}
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		comments(m.Content[i].HeadComment)
		buf.WriteString(m.Content[i].Value + "=" + strings.ReplaceAll(m.Content[i+1].Value, "\n", `\n`) + "\n")
	}
	comments(m.FootComment)
}

// flatten is unflatten's inverse, sorted as sops sorts the keys.
func flatten(n *yaml.Node, prefix string, out *[]string) {
	start := len(*out)
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			sep := "__map_"
			if prefix == metaKey {
				sep = "_"
			}
			flatten(n.Content[i+1], prefix+sep+n.Content[i].Value, out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			flatten(c, prefix+"__list_"+strconv.Itoa(i), out)
		}
	case yaml.ScalarNode:
		*out = append(*out, prefix+"="+strings.ReplaceAll(n.Value, "\n", `\n`))
	}
	if prefix == metaKey {
		sort.Strings((*out)[start:])
	}
}
