package kubeharness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// typeInfo is what is needed to find an object's collection URL.
type typeInfo struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// Create POSTs every object in manifest to its collection, in order. The
// manifest is one JSON object, or YAML with documents separated by "---".
//
// Without API discovery, scope and resource name are inferred: an object
// with metadata.namespace is namespaced, one without is cluster-scoped, and
// the resource is the lower-cased kind made plural with English rules (Role
// -> roles, NetworkPolicy -> networkpolicies). Use Do for anything else.
func (c *Client) Create(ctx context.Context, manifest []byte) error {
	docs, contentType := splitManifest(manifest)

	for i, doc := range docs {
		ti, err := parseTypeInfo(doc, contentType)
		if err != nil {
			return fmt.Errorf("create object %d: %w", i, err)
		}

		path, err := collectionPath(ti)
		if err != nil {
			return fmt.Errorf("create object %d: %w", i, err)
		}

		if _, err := c.Do(ctx, http.MethodPost, path, contentType, doc); err != nil {
			return fmt.Errorf("create %s %s: %w", ti.Kind, ti.APIVersion, err)
		}
	}

	return nil
}

func splitManifest(manifest []byte) ([][]byte, string) {
	trimmed := bytes.TrimSpace(manifest)
	if bytes.HasPrefix(trimmed, []byte("{")) {
		return [][]byte{trimmed}, "application/json"
	}

	var (
		docs [][]byte
		cur  strings.Builder
	)

	flush := func() {
		if strings.TrimSpace(cur.String()) != "" {
			docs = append(docs, []byte(cur.String()))
		}

		cur.Reset()
	}

	for line := range strings.SplitSeq(string(trimmed), "\n") {
		if isDocSeparator(line) {
			flush()

			continue
		}

		cur.WriteString(line)
		cur.WriteByte('\n')
	}

	flush()

	return docs, "application/yaml"
}

// isDocSeparator matches "---", optionally followed by blanks or a comment.
func isDocSeparator(line string) bool {
	rest, ok := strings.CutPrefix(strings.TrimRight(line, " \t\r"), "---")

	return ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t')
}

func parseTypeInfo(doc []byte, contentType string) (typeInfo, error) {
	var ti typeInfo

	if contentType == "application/json" {
		if err := json.Unmarshal(doc, &ti); err != nil {
			return ti, fmt.Errorf("decode JSON object: %w", err)
		}
	} else {
		ti = scanYAMLTypeInfo(string(doc))
	}

	if ti.APIVersion == "" || ti.Kind == "" {
		return ti, fmt.Errorf("object lacks apiVersion or kind")
	}

	return ti, nil
}

// scanYAMLTypeInfo reads apiVersion, kind and metadata.namespace from block
// style YAML. A full YAML parser would need a dependency; these three keys
// are plain scalars in every manifest a test writes.
func scanYAMLTypeInfo(doc string) typeInfo {
	var (
		ti         typeInfo
		inMetadata bool
		metaIndent = -1
	)

	for line := range strings.SplitSeq(doc, "\n") {
		content := strings.TrimLeft(line, " ")
		if content == "" || strings.HasPrefix(content, "#") {
			continue
		}

		indent := len(line) - len(content)
		key, val, _ := strings.Cut(content, ":")
		val = yamlScalar(val)

		switch {
		case indent == 0:
			inMetadata = key == "metadata"

			switch key {
			case "apiVersion":
				ti.APIVersion = val
			case "kind":
				ti.Kind = val
			}
		case inMetadata:
			if metaIndent < 0 {
				metaIndent = indent
			}

			if indent == metaIndent && key == "namespace" {
				ti.Metadata.Namespace = val
			}
		}
	}

	return ti
}

func yamlScalar(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.Index(v, " #"); i >= 0 {
		v = strings.TrimSpace(v[:i])
	}

	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		v = v[1 : len(v)-1]
	}

	return v
}

func collectionPath(ti typeInfo) (string, error) {
	var base string

	switch strings.Count(ti.APIVersion, "/") {
	case 0:
		base = "/api/" + ti.APIVersion
	case 1:
		base = "/apis/" + ti.APIVersion
	default:
		return "", fmt.Errorf("malformed apiVersion %q", ti.APIVersion)
	}

	if ti.Metadata.Namespace != "" {
		base += "/namespaces/" + ti.Metadata.Namespace
	}

	return base + "/" + pluralResource(ti.Kind), nil
}

func pluralResource(kind string) string {
	r := strings.ToLower(kind)

	switch {
	case r == "endpoints":
		return r
	case len(r) > 1 && strings.HasSuffix(r, "y") && !strings.ContainsAny(r[len(r)-2:len(r)-1], "aeiou"):
		return r[:len(r)-1] + "ies"
	case strings.HasSuffix(r, "s"), strings.HasSuffix(r, "x"), strings.HasSuffix(r, "ch"), strings.HasSuffix(r, "sh"):
		return r + "es"
	default:
		return r + "s"
	}
}
