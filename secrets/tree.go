package secrets

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// visitor sees a document's leaves and comment lines in the order SOPS
// walks its tree, which is the order of the MAC.
type visitor struct {
	leaf func(path []string, n *yaml.Node) error
	// comment gets one comment line without its '#', and may change it.
	comment func(path []string, line string) (string, error)
}

// walkNode visits n, a collection whose own key path is path. SOPS gives
// a comment the path of the branch it sits in: a key's and a scalar
// value's comments belong to the enclosing mapping, a collection's to the
// collection itself; list items do not extend the path.
func walkNode(n *yaml.Node, path []string, v *visitor) error {
	if err := walkComments(n, path, v); err != nil {
		return err
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := walkNode(c, path, v); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if err := walkComments(k, path, v); err != nil {
				return err
			}
			if err := walkChild(val, path, append(path[:len(path):len(path)], k.Value), v); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			if err := walkChild(item, path, path, v); err != nil {
				return err
			}
		}
	case yaml.ScalarNode:
		if n.ShortTag() != "!!null" {
			return errors.New("the document is a single value, not a mapping")
		}
	case yaml.AliasNode:
		return errors.New("YAML aliases are not supported in secret files")
	}
	return nil
}

// walkChild visits a value: its path is own; parent is the path of the
// branch it sits in.
func walkChild(n *yaml.Node, parent, own []string, v *visitor) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if err := walkComments(n, parent, v); err != nil {
			return err
		}
		if n.ShortTag() == "!!null" {
			return nil // SOPS neither encrypts nor hashes a null
		}
		return v.leaf(own, n)
	case yaml.AliasNode:
		return errors.New("YAML aliases are not supported in secret files")
	}
	return walkNode(n, own, v)
}

func walkComments(n *yaml.Node, path []string, v *visitor) error {
	if v.comment == nil {
		return nil
	}
	for _, c := range []*string{&n.HeadComment, &n.LineComment, &n.FootComment} {
		if *c == "" {
			continue
		}
		lines := strings.Split(*c, "\n")
		for i, l := range lines {
			if !strings.HasPrefix(l, "#") {
				continue
			}
			out, err := v.comment(path, l[1:])
			if err != nil {
				return err
			}
			lines[i] = "#" + out
		}
		*c = strings.Join(lines, "\n")
	}
	return nil
}

// typedPlain is a plaintext leaf's SOPS type and the bytes SOPS encrypts
// and hashes for it.
func typedPlain(n *yaml.Node) (typ string, b []byte, err error) {
	switch n.ShortTag() {
	case "!!str", "!!binary":
		return "str", []byte(n.Value), nil
	case "!!int":
		var i int
		if err := n.Decode(&i); err != nil {
			return "", nil, errors.New("integer out of range")
		}
		return "int", []byte(strconv.Itoa(i)), nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil {
			return "", nil, errors.New("malformed number")
		}
		return "float", []byte(strconv.FormatFloat(f, 'f', -1, 64)), nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return "", nil, errors.New("malformed boolean")
		}
		return "bool", []byte(boolText(b)), nil
	case "!!timestamp":
		var t time.Time
		if err := n.Decode(&t); err != nil {
			return "", nil, errors.New("malformed timestamp")
		}
		b, err := t.MarshalText()
		return "time", b, err
	}
	return "", nil, errors.New("unsupported value type " + n.ShortTag())
}

// setPlain makes n the decrypted value plain of SOPS type typ.
func setPlain(n *yaml.Node, typ string, plain []byte) {
	n.Style = 0
	n.Value = string(plain)
	switch typ {
	case "int":
		n.Tag = "!!int"
	case "float":
		n.Tag = "!!float"
	case "bool":
		n.Tag = "!!bool"
		n.Value = strings.ToLower(n.Value)
	case "time":
		n.Tag = "!!timestamp"
	default:
		n.Tag = "!!str"
	}
}

func cloneNode(n *yaml.Node) *yaml.Node {
	if n == nil {
		return nil
	}
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, x := range n.Content {
		c.Content[i] = cloneNode(x)
	}
	return &c
}

// mappingOf is the top mapping of a document node (nil when empty).
func mappingOf(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	return n
}

// find follows a dotted path from n: at each mapping the longest run of
// parts that is a key wins (so a key may hold dots), and a number indexes
// a list.
func find(n *yaml.Node, parts []string) *yaml.Node {
	if len(parts) == 0 {
		return n
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return find(n.Content[0], parts)
	case yaml.MappingNode:
		for j := len(parts); j > 0; j-- {
			key := strings.Join(parts[:j], ".")
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					if r := find(n.Content[i+1], parts[j:]); r != nil {
						return r
					}
				}
			}
		}
	case yaml.SequenceNode:
		i, err := strconv.Atoi(parts[0])
		if err == nil && i >= 0 && i < len(n.Content) {
			return find(n.Content[i], parts[1:])
		}
	}
	return nil
}

// keyPaths lists the dotted paths of every key in n, in document order.
func keyPaths(n *yaml.Node, prefix string, out *[]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			keyPaths(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := prefix + n.Content[i].Value
			*out = append(*out, p)
			keyPaths(n.Content[i+1], p+".", out)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := prefix + strconv.Itoa(i)
			*out = append(*out, p)
			keyPaths(c, p+".", out)
		}
	}
}
