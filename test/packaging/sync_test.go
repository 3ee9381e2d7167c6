// Package packaging checks the packaging definitions against each other.
package packaging

import (
	"os"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

type content struct {
	Src      string         `json:"src"`
	Dst      string         `json:"dst"`
	Type     string         `json:"type"`
	FileInfo map[string]any `json:"file_info"`
}

type pkg struct {
	Description string                    `json:"description"`
	License     string                    `json:"license"`
	Maintainer  string                    `json:"maintainer"`
	Release     string                    `json:"release"`
	Changelog   string                    `json:"changelog"`
	Contents    []content                 `json:"contents"`
	Overrides   map[string]map[string]any `json:"overrides"`
	RPM         map[string]any            `json:"rpm"`
	Deb         map[string]any            `json:"deb"`
}

func load(t *testing.T, path string, into any) {
	t.Helper()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// .goreleaser.yaml's packages must be what nfpm.yaml builds locally; only
// the binary differs (goreleaser adds the one it built, at bindir).
func TestPackagingInSync(t *testing.T) {
	var local pkg
	load(t, "../../nfpm.yaml", &local)

	var release struct {
		Nfpms []struct {
			pkg
			Bindir string `json:"bindir"`
		} `json:"nfpms"`
	}
	load(t, "../../.goreleaser.yaml", &release)

	if len(release.Nfpms) != 1 {
		t.Fatalf(".goreleaser.yaml has %d nfpms entries, want 1", len(release.Nfpms))
	}

	rel := release.Nfpms[0]
	if rel.Bindir != "/usr/bin" {
		t.Errorf("goreleaser bindir %q, want /usr/bin", rel.Bindir)
	}

	var withoutBinary []content

	for _, c := range local.Contents {
		if c.Dst != "/usr/bin/extractedprism" {
			withoutBinary = append(withoutBinary, c)
		}
	}

	local.Contents = withoutBinary

	// Both sign deb and rpm with the same key, named the way each tool
	// takes it: an environment variable for nfpm, a template for goreleaser.
	for _, format := range []struct {
		name          string
		local, remote map[string]any
	}{{"rpm", local.RPM, rel.RPM}, {"deb", local.Deb, rel.Deb}} {
		checkKeyFile(t, "nfpm.yaml "+format.name, format.local, "${SIGNING_KEY}")
		checkKeyFile(t, ".goreleaser.yaml "+format.name, format.remote, "{{ .Env.SIGNING_KEY }}")
	}

	if !reflect.DeepEqual(local, rel.pkg) {
		t.Fatalf("nfpm.yaml and .goreleaser.yaml differ:\n nfpm.yaml:   %+v\n goreleaser:  %+v", local, rel.pkg)
	}
}

// checkKeyFile asserts section.signature.key_file == want and removes it, so
// that the rest of the two definitions can be compared as they are.
func checkKeyFile(t *testing.T, where string, section map[string]any, want string) {
	t.Helper()

	sig, ok := section["signature"].(map[string]any)
	if !ok {
		t.Fatalf("%s: no signature section: the package would be unsigned", where)
	}

	if got := sig["key_file"]; got != want {
		t.Errorf("%s: signature.key_file %q, want %q", where, got, want)
	}

	delete(sig, "key_file")
}
