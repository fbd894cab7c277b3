package spec

import (
	"bytes"
	_ "embed"
)

//go:embed schema.json
var schemaJSON []byte

// Schema returns the JSON Schema (draft 2020-12) of an App document, for
// editors: point yaml-language-server at it with
// "# yaml-language-server: $schema=<url or path>". The loader is the
// authority; the schema catches most mistakes while typing.
func Schema() []byte { return bytes.Clone(schemaJSON) }
