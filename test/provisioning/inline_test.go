//go:build provisioning

package provisioning

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the inline copies in packaging/ from their sources")

// inlineCopy is a file embedded verbatim in a provisioning file, so that the
// file can be copied onto a node on its own. Its block scalar is the value
// of key in the item starting with anchor.
type inlineCopy struct {
	anchor string // the item's first line, trimmed: "- path: X" or "- name: X"
	key    string // "content: |", "inline: |" or "contents: |"
	source string // the original, relative to the repository root
	edit   func(string) string
}

const (
	wiringScript  = "packaging/kubelet/extractedprism-kubelet-wiring"
	wiringService = "packaging/kubelet/extractedprism-kubelet-wiring.service"
	wiringPath    = "packaging/kubelet/extractedprism-kubelet-wiring.path"
)

// toOptBin moves the wiring script to /opt/bin: /usr is read-only on
// Flatcar and /usr/local is not writable there either.
func toOptBin(s string) string {
	return strings.ReplaceAll(s, "/usr/local/sbin/", "/opt/bin/")
}

func inlineCopies() map[string][]inlineCopy {
	cloudInit := []inlineCopy{
		{"- path: /usr/local/sbin/extractedprism-kubelet-wiring", "content: |", wiringScript, nil},
		{"- path: /etc/systemd/system/extractedprism-kubelet-wiring.service", "content: |", wiringService, nil},
		{"- path: /etc/systemd/system/extractedprism-kubelet-wiring.path", "content: |", wiringPath, nil},
	}
	butane := func(scriptDir string, edit func(string) string) []inlineCopy {
		return []inlineCopy{
			{"- path: " + scriptDir + "extractedprism-kubelet-wiring", "inline: |", wiringScript, nil},
			{"- name: extractedprism.socket", "contents: |", "systemd/extractedprism.socket", nil},
			{"- name: extractedprism-health.socket", "contents: |", "systemd/extractedprism-health.socket", nil},
			{"- name: extractedprism-link-local.socket", "contents: |", "systemd/extractedprism-link-local.socket", nil},
			{"- name: extractedprism.service", "contents: |", "systemd/extractedprism.service", nil},
			{"- name: extractedprism-kubelet-wiring.service", "contents: |", wiringService, edit},
			{"- name: extractedprism-kubelet-wiring.path", "contents: |", wiringPath, nil},
		}
	}

	// The client files of the repository, the same a node gets from the
	// README's install lines.
	aptSources := inlineCopy{"- path: /etc/apt/sources.list.d/extractedprism.sources", "content: |", "packaging/repo/extractedprism.sources", nil}
	dnfRepo := inlineCopy{"- path: /etc/yum.repos.d/extractedprism.repo", "content: |", "packaging/repo/extractedprism.repo", nil}

	return map[string][]inlineCopy{
		"packaging/cloud-init/apt.yaml": append([]inlineCopy{aptSources}, cloudInit...),
		"packaging/cloud-init/dnf.yaml": append([]inlineCopy{dnfRepo}, cloudInit...),
		"packaging/butane/fcos.bu":      butane("/usr/local/sbin/", nil),
		"packaging/butane/fcos-repo.bu": {
			{"- path: /etc/yum.repos.d/extractedprism.repo", "inline: |", "packaging/repo/extractedprism.repo", nil},
			{"- path: /usr/local/sbin/extractedprism-kubelet-wiring", "inline: |", wiringScript, nil},
			{"- name: extractedprism-kubelet-wiring.service", "contents: |", wiringService, nil},
			{"- name: extractedprism-kubelet-wiring.path", "contents: |", wiringPath, nil},
		},
		"packaging/butane/flatcar.bu": butane("/opt/bin/", toOptBin),
	}
}

// blockScalar finds the lines of the block scalar that c points at: the
// first line after the anchor whose trimmed text is c.key, then every
// following line that is blank or indented deeper than that key. Trailing
// blank lines are not part of it.
func blockScalar(lines []string, c inlineCopy) (start, end, indent int, err error) {
	anchor := -1

	for i, l := range lines {
		if strings.TrimSpace(l) == c.anchor {
			if anchor >= 0 {
				return 0, 0, 0, fmt.Errorf("%q appears more than once", c.anchor)
			}

			anchor = i
		}
	}

	if anchor < 0 {
		return 0, 0, 0, fmt.Errorf("%q not found", c.anchor)
	}

	key := -1

	for i := anchor + 1; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) == c.key {
			key = i

			break
		}
	}

	if key < 0 {
		return 0, 0, 0, fmt.Errorf("no %q after %q", c.key, c.anchor)
	}

	keyIndent := indentOf(lines[key])
	start, end = key+1, key+1

	for i := key + 1; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "" && indentOf(lines[i]) <= keyIndent {
			break
		}

		if strings.TrimSpace(lines[i]) != "" {
			end = i + 1
		}
	}

	return start, end, keyIndent + 2, nil
}

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

func blockText(lines []string, start, end, indent int) string {
	var b strings.Builder

	for _, l := range lines[start:end] {
		if len(l) >= indent {
			l = l[indent:]
		} else {
			l = strings.TrimLeft(l, " ")
		}

		b.WriteString(l)
		b.WriteByte('\n')
	}

	return b.String()
}

func renderBlock(content string, indent int) []string {
	var out []string

	for l := range strings.SplitSeq(strings.TrimSuffix(content, "\n"), "\n") {
		if l == "" {
			out = append(out, "")

			continue
		}

		out = append(out, strings.Repeat(" ", indent)+l)
	}

	return out
}

// TestInlineCopies checks that every inline copy is its source verbatim.
// After changing a source, run
//
//	go test -tags provisioning ./test/provisioning -run TestInlineCopies -update
func TestInlineCopies(t *testing.T) {
	for file, copies := range inlineCopies() {
		path := filepath.Join(root, file)

		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}

		lines := strings.Split(string(data), "\n")
		changed := false

		for _, c := range copies {
			t.Run(filepath.Base(file)+"/"+filepath.Base(c.anchor[strings.LastIndex(c.anchor, " ")+1:]), func(t *testing.T) {
				want := repoFile(t, c.source)
				if c.edit != nil {
					want = c.edit(want)
				}

				start, end, indent, err := blockScalar(lines, c)
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}

				if got := blockText(lines, start, end, indent); got == want {
					return
				}

				if !*update {
					t.Fatalf("%s: the copy of %s differs from it; rerun with -update (see the test's comment)", file, c.source)
				}

				lines = append(lines[:start], append(renderBlock(want, indent), lines[end:]...)...)
				changed = true
			})
		}

		if changed {
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
				t.Fatal(err)
			}

			t.Logf("updated %s", file)
		}
	}
}
