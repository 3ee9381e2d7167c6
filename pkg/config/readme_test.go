package config

import (
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the reference table in README.md")

const (
	refStart = "<!-- config-reference:start -->\n"
	refEnd   = "<!-- config-reference:end -->"
)

func TestReadmeReference(t *testing.T) {
	t.Parallel()

	const path = "../../README.md"

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	text := string(data)
	start, end := strings.Index(text, refStart), strings.Index(text, refEnd)

	if start < 0 || end < start {
		t.Fatalf("README.md has no %q ... %q block", refStart, refEnd)
	}

	want := text[:start] + refStart + Reference() + text[end:]
	if want == text {
		return
	}

	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil { //nolint:gosec // a README
			t.Fatal(err)
		}

		return
	}

	t.Fatal("the settings reference in README.md is out of date; run: go test ./pkg/config -run TestReadmeReference -update")
}
