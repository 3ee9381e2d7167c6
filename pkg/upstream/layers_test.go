package upstream

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// The picture in the package doc, enforced: which of the project's
// packages each part may import.
func TestLayers(t *testing.T) {
	t.Parallel()

	const module = "github.com/lexfrei/extractedprism/"

	allowed := map[string][]string{
		"pkg/upstream":  {},
		"pkg/config":    {},
		"pkg/discovery": {},
		"pkg/balancer":  {"pkg/upstream"},
		"pkg/check":     {"pkg/upstream"},
	}

	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"pkg/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}

	seen := 0

	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(strings.ReplaceAll(line, module, ""))

		may, ok := allowed[fields[0]]
		if !ok {
			continue
		}

		seen++

		for _, imp := range fields[1:] {
			if strings.HasPrefix(imp, "pkg/") && !slices.Contains(may, imp) {
				t.Errorf("%s imports %s", fields[0], imp)
			}
		}
	}

	if seen != len(allowed) {
		t.Fatalf("found %d of the %d packages the rule is about", seen, len(allowed))
	}
}
