//go:build provisioning

// Package provisioning checks what operators copy onto nodes and clusters:
// the cloud-init user-data, the kubelet wiring, the Kubernetes manifests and
// the Helm chart under packaging/. The Butane configs are checked by the
// separate module in ./butane, which keeps butane and ignition out of the
// daemon's go.sum.
//
// Run everything with test/provisioning/run.sh: it installs cloud-init,
// builds the binary and renders the chart, then runs these tests inside a
// private network namespace (the dry-run apply uses a real kube-apiserver).
package provisioning

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// root is the repository root, relative to this package's directory, where
// `go test` runs the test binary.
const root = "../.."

func repoFile(t *testing.T, rel string) string {
	t.Helper()

	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}

	return string(data)
}

// uncommentOptional enables the "BEGIN OPTIONAL ... END OPTIONAL" blocks of
// a shipped file the way an operator would: every line strictly between the
// markers is commented-out content, "<indent># text", and loses its "# ".
func uncommentOptional(text string) (string, int, error) {
	lines := strings.Split(text, "\n")
	blocks, in := 0, false

	for i, line := range lines {
		trimmed := strings.TrimSpace(line)

		switch {
		case strings.HasPrefix(trimmed, "# BEGIN OPTIONAL"):
			if in {
				return "", 0, fmt.Errorf("line %d: nested BEGIN OPTIONAL", i+1)
			}

			in = true
			blocks++
		case strings.HasPrefix(trimmed, "# END OPTIONAL"):
			if !in {
				return "", 0, fmt.Errorf("line %d: END OPTIONAL without BEGIN", i+1)
			}

			in = false
		case in:
			indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
			rest := line[len(indent):]

			switch {
			case rest == "#":
				lines[i] = indent
			case strings.HasPrefix(rest, "# "):
				lines[i] = indent + rest[2:]
			default:
				return "", 0, fmt.Errorf("line %d: not commented out inside an OPTIONAL block: %q", i+1, line)
			}
		}
	}

	if in {
		return "", 0, fmt.Errorf("BEGIN OPTIONAL without END")
	}

	return strings.Join(lines, "\n"), blocks, nil
}

// yamlDocs splits a multi-document YAML stream and decodes each non-empty
// document into a generic JSON-compatible map.
func yamlDocs(t *testing.T, name, text string) []map[string]any {
	t.Helper()

	var docs []map[string]any

	for i, doc := range splitDocs(text) {
		var m map[string]any
		if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
			t.Fatalf("%s: document %d: %v", name, i, err)
		}

		if m != nil {
			docs = append(docs, m)
		}
	}

	return docs
}

func splitDocs(text string) []string {
	var (
		docs []string
		cur  strings.Builder
	)

	for line := range strings.SplitSeq(text, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()

			continue
		}

		cur.WriteString(line)
		cur.WriteByte('\n')
	}

	return append(docs, cur.String())
}

// get walks a decoded YAML/JSON value along keys (map keys, or list indexes
// given as int).
func get(v any, path ...any) (any, bool) {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}

			if v, ok = m[k]; !ok {
				return nil, false
			}
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil, false
			}

			v = l[k]
		}
	}

	return v, true
}

func mustGet(t *testing.T, v any, path ...any) any {
	t.Helper()

	got, ok := get(v, path...)
	if !ok {
		t.Fatalf("missing %v", path)
	}

	return got
}

func jsonString(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}

	return string(data)
}

// binary is the extractedprism binary that run.sh built from this tree.
func binary(t *testing.T) string {
	t.Helper()

	bin := os.Getenv("EP_BINARY")
	if bin == "" {
		t.Fatal("EP_BINARY is not set: run test/provisioning/run.sh")
	}

	return bin
}

// checkConfig runs `extractedprism check-config` on a config file's text
// and on EP_* variables, exactly as the daemon would load them, and fails
// the test with its output when it rejects them.
func checkConfig(t *testing.T, toml string, env map[string]string) {
	t.Helper()

	file := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(file, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, binary(t), "check-config", "--config", file)

	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}

	var out bytes.Buffer

	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("extractedprism check-config rejects it (%v):\n%s", err, out.String())
	}
}
