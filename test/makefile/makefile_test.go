// Package makefile runs the real Makefile targets whose recipes could pass
// having done nothing: a fuzz target or benchmark renamed away, a kube-bins
// build that fails on the left of a pipe, a man page command that fails or
// prints nothing. The tools they call (go, the built binary, build.sh) are
// replaced by small scripts in a scratch directory that produce exactly
// those cases; make, bash and the repository's hack/must-run.sh are real.
package makefile

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository root, relative to this package's directory.
const root = "../.."

// stubGo stands in for the go command. For `go test` it prints what go
// prints when its -fuzz or -bench pattern matches nothing ("no fuzz tests
// to fuzz", "PASS", "ok") and exits 0; for the functions listed in
// $STUB_RUNS (space-separated) it prints the line a real run prints. `go build` does nothing.
// Every call is appended to $STUB_LOG.
const stubGo = `#!/bin/bash
echo "$*" >>"$STUB_LOG"
[ "$1" = test ] || exit 0
for a in "$@"; do
	case $a in
	'^Fuzz'*) name=${a#^}; name=${name%$}; echo "=== RUN   $name"
		case " $STUB_RUNS " in
		*" $name "*) echo "--- PASS: $name (0.01s)" ;;
		*) echo "testing: warning: no fuzz tests to fuzz" ;;
		esac ;;
	'^Benchmark'*|.) name=${a#^}; name=${name%$}
		for r in $STUB_RUNS; do
			if [ "$r" = "$name" ] || [ "$name" = . ]; then printf '%s-2   \t       1\t   1000 ns/op\n' "$r"; fi
		done ;;
	esac
done
echo PASS
echo "ok  	example	0.01s"
`

type scratch struct {
	dir string
	log string
}

// newScratch is a directory laid out like the repository as far as the
// targets under test look: hack/must-run.sh (the real one), a stub go and a
// hack/kube-bins/build.sh that fails after printing a line.
func newScratch(t *testing.T) *scratch {
	t.Helper()

	s := &scratch{dir: t.TempDir()}
	s.log = filepath.Join(s.dir, "calls.log")

	guard, err := os.ReadFile(filepath.Join(root, "hack/must-run.sh"))
	if err != nil {
		t.Fatal(err)
	}

	s.write(t, "hack/must-run.sh", string(guard))
	s.write(t, "stub/go", stubGo)
	s.write(t, "hack/kube-bins/build.sh", "#!/bin/bash\necho /nonexistent/kube-bins\necho 'kube-bins: build failed' >&2\nexit 1\n")

	return s
}

func (s *scratch) write(t *testing.T, rel, content string) {
	t.Helper()

	p := filepath.Join(s.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(p, []byte(content), 0o755); err != nil { //nolint:gosec // scripts
		t.Fatal(err)
	}
}

// make runs the repository's Makefile in the scratch directory with the
// stub go; extra are more variables or flags. It returns the output and
// whether make succeeded.
func (s *scratch) make(t *testing.T, runs string, extra ...string) (string, bool) {
	t.Helper()

	mk, err := filepath.Abs(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}

	args := append([]string{"--no-print-directory", "-f", mk, "GO=" + filepath.Join(s.dir, "stub/go"), "VERSION=v0", "COMMIT=c"}, extra...)
	cmd := exec.CommandContext(t.Context(), "make", args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "STUB_LOG="+s.log, "STUB_RUNS="+runs)

	out, err := cmd.CombinedOutput()

	return string(out), err == nil
}

func (s *scratch) calls(t *testing.T) string {
	t.Helper()

	data, err := os.ReadFile(s.log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}

	return string(data)
}

// A fuzz target or benchmark that no longer exists under its name makes
// `go test` exit 0; the target must fail instead, and pass when it runs.
func TestTargetsFailWhenTheNamedFunctionDidNotRun(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		target string
		runs   string // the function the stub reports as run
	}{
		{"test-fuzz", "FuzzLoad FuzzFromSlice"},
		{"bench-go", "BenchmarkPick"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			t.Parallel()

			s := newScratch(t)

			out, ok := s.make(t, "", tc.target, "FUZZTIME=1s")
			if ok || !strings.Contains(out, "must-run: no run of") {
				t.Fatalf("make %s with nothing run: succeeded=%v, want a failure naming the guard:\n%s", tc.target, ok, out)
			}

			out, ok = s.make(t, tc.runs, tc.target, "FUZZTIME=1s")
			if !ok {
				t.Fatalf("make %s with %s run: failed:\n%s", tc.target, tc.runs, out)
			}

			if tc.target != "test-fuzz" {
				return
			}

			// Each fuzz target is guarded on its own: FuzzLoad running
			// does not cover FuzzFromSlice.
			out, ok = s.make(t, "FuzzLoad", tc.target, "FUZZTIME=1s")
			if ok || !strings.Contains(out, "must-run: no run of FuzzFromSlice") {
				t.Fatalf("make test-fuzz with only FuzzLoad run: succeeded=%v:\n%s", ok, out)
			}
		})
	}
}

// bench-discovery: a failed kube-bins build stops the target before the
// benchmark runs, although `tail -1` after it succeeds; and the benchmark
// must have run.
func TestBenchDiscoveryStopsOnAFailedKubeBinsBuild(t *testing.T) {
	t.Parallel()

	s := newScratch(t)

	out, ok := s.make(t, "BenchmarkIdleWithDiscovery", "bench-discovery")
	if ok {
		t.Fatalf("make bench-discovery succeeded with a failed kube-bins build:\n%s", out)
	}

	if strings.Contains(s.calls(t), "-bench") {
		t.Fatalf("the benchmark ran after the kube-bins build failed:\n%s", s.calls(t))
	}

	s.write(t, "hack/kube-bins/build.sh", "#!/bin/bash\necho "+s.dir+"\n")

	if out, ok := s.make(t, "", "bench-discovery"); ok || !strings.Contains(out, "must-run: no run of BenchmarkIdleWithDiscovery") {
		t.Fatalf("make bench-discovery with no benchmark run: succeeded=%v:\n%s", ok, out)
	}

	if out, ok := s.make(t, "BenchmarkIdleWithDiscovery", "bench-discovery"); !ok {
		t.Fatalf("make bench-discovery with the benchmark run: failed:\n%s", out)
	}
}

// share: a man command that fails or prints no page fails the target
// instead of packaging an empty compressed page.
func TestShareRefusesAnEmptyManPage(t *testing.T) {
	t.Parallel()

	const completion = `[ "$1" = completion ] && { echo "# completion for $2"; exit 0; }` + "\n"

	for _, tc := range []struct {
		name string
		man  string
		ok   bool
	}{
		{"man fails", "echo 'man: broken' >&2; exit 1", false},
		{"man prints nothing", "exit 0", false},
		{"a page", "printf '.TH EXTRACTEDPRISM 8\\n.SH NAME\\nextractedprism\\n'", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			s := newScratch(t)
			s.write(t, "bin/extractedprism", "#!/bin/bash\n"+completion+"[ \"$1\" = man ] && { "+tc.man+"; }\n")

			// -o build: use the stub binary as built.
			out, ok := s.make(t, "", "-o", "build", "share")
			if ok != tc.ok {
				t.Fatalf("make share: succeeded=%v, want %v:\n%s", ok, tc.ok, out)
			}

			gz := filepath.Join(s.dir, "bin/share/extractedprism.8.gz")

			page, err := exec.CommandContext(t.Context(), "gzip", "-dc", gz).Output()
			if !tc.ok {
				if err == nil && len(page) == 0 {
					t.Fatalf("an empty %s was left for packaging", gz)
				}

				return
			}

			if err != nil || !strings.HasPrefix(string(page), ".TH EXTRACTEDPRISM 8") {
				t.Fatalf("%s: %q, %v", gz, page, err)
			}
		})
	}
}
