//go:build packaging

package packaging

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The package version of every build, in the order the builds happen, must
// be accepted by dpkg and rpm and must increase strictly in both orderings:
// otherwise `apt-get upgrade` / `dnf upgrade` would skip or downgrade a build.
// hack/pkg-version.sh runs for real on a throwaway git history; dpkg and rpm
// compare the results (needs dpkg, rpm and git: `make test-packages`
// installs rpm).
func TestPackageVersionsSortInBuildOrder(t *testing.T) {
	for _, tool := range []string{"git", "dpkg", "rpm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}

	script, err := filepath.Abs("../../hack/pkg-version.sh")
	if err != nil {
		t.Fatal(err)
	}

	repo := t.TempDir()
	git := gitIn(t, repo)
	git("init", "-q", "-b", "main")

	commits := 0
	commit := func() {
		commits++
		path := filepath.Join(repo, "f")
		if err := os.WriteFile(path, fmt.Appendf(nil, "%d\n", commits), 0o644); err != nil {
			t.Fatal(err)
		}

		git("add", "f")
		git("commit", "-q", "-m", fmt.Sprint(commits))
	}

	// Each step changes the checkout, then the build's version must match.
	steps := []struct {
		do   func()
		want string // a regular expression over the whole version
	}{
		{commit, `0\.0\.0\+git1\.g[0-9a-f]{12}`},
		{commit, `0\.0\.0\+git2\.g[0-9a-f]{12}`},
		{func() { writeFile(t, repo, "f", "dirty\n") }, `0\.0\.0\+git2\.g[0-9a-f]{12}\.dirty`},
		{func() { git("checkout", "-q", "--", "f"); git("tag", "v0.1.0") }, `0\.1\.0`},
		{commit, `0\.1\.0\+git1\.g[0-9a-f]{12}`},
		{func() { writeFile(t, repo, "f", "dirty\n") }, `0\.1\.0\+git1\.g[0-9a-f]{12}\.dirty`},
		{func() { git("checkout", "-q", "--", "f"); commit() }, `0\.1\.0\+git2\.g[0-9a-f]{12}`},
		{func() { repeat(7, commit) }, `0\.1\.0\+git9\.g[0-9a-f]{12}`},
		{commit, `0\.1\.0\+git10\.g[0-9a-f]{12}`}, // numerically after git9
		{func() { git("tag", "v0.1.1") }, `0\.1\.1`},
		{func() { commit(); git("tag", "v0.2.0-rc.1") }, `0\.2\.0~rc\.1`},
		{commit, `0\.2\.0~rc\.1\+git1\.g[0-9a-f]{12}`},
		{func() { commit(); git("tag", "v0.2.0-rc.2") }, `0\.2\.0~rc\.2`},
		{func() { git("tag", "v0.2.0") }, `0\.2\.0`}, // the same commit, now released
		{commit, `0\.2\.0\+git1\.g[0-9a-f]{12}`},
		{func() { commit(); git("tag", "v0.10.0") }, `0\.10\.0`}, // numerically after 0.2
		{commit, `0\.10\.0\+git1\.g[0-9a-f]{12}`},
		{func() { git("tag", "v1.0.0") }, `1\.0\.0`},
	}

	var versions []string

	for i, step := range steps {
		step.do()

		out, err := exec.Command("sh", script, repo).Output()
		if err != nil {
			t.Fatalf("step %d: %s: %v", i, script, err)
		}

		v := strings.TrimSpace(string(out))
		if !matchWhole(step.want, v) {
			t.Errorf("step %d: version %q, want /%s/", i, v, step.want)
		}

		versions = append(versions, v)
	}

	for _, v := range versions {
		// The release "-1" is what nfpm.yaml appends in both formats.
		if out, err := exec.Command("dpkg", "--validate-version", v+"-1").CombinedOutput(); err != nil {
			t.Errorf("dpkg rejects %q: %v %s", v+"-1", err, out)
		}

		if strings.ContainsAny(v, "-/ ") {
			t.Errorf("%q is not a valid rpm version (no '-')", v)
		}
	}

	for i := 1; i < len(versions); i++ {
		older, newer := versions[i-1]+"-1", versions[i]+"-1"
		if !dpkgLess(t, older, newer) {
			t.Errorf("dpkg: %s is not older than %s", older, newer)
		}

		if !rpmLess(t, older, newer) {
			t.Errorf("rpm: %s is not older than %s", older, newer)
		}
	}

	// Beyond neighbours: a build after v0.1.0 sorts before v0.1.1 and
	// v0.2.0~rc.1, and every untagged build before the first release.
	for i := range versions {
		for j := i + 1; j < len(versions); j++ {
			older, newer := versions[i]+"-1", versions[j]+"-1"
			if !dpkgLess(t, older, newer) || !rpmLess(t, older, newer) {
				t.Errorf("%s (step %d) is not older than %s (step %d) in both dpkg and rpm", older, i, newer, j)
			}
		}
	}
}

// The script must not fail outside a git checkout (a source tarball).
func TestPackageVersionWithoutGit(t *testing.T) {
	script, err := filepath.Abs("../../hack/pkg-version.sh")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	cmd := exec.Command("sh", script, dir)
	cmd.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(dir))

	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}

	if got := strings.TrimSpace(string(out)); got != "0.0.0+unknown" {
		t.Fatalf("got %q, want 0.0.0+unknown", got)
	}
}

func gitIn(t *testing.T, dir string) func(args ...string) {
	t.Helper()

	return func(args ...string) {
		t.Helper()

		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(),
			"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.invalid",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.invalid")

		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}

func writeFile(t *testing.T, dir, name, data string) {
	t.Helper()

	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func repeat(n int, f func()) {
	for range n {
		f()
	}
}

func matchWhole(re, s string) bool {
	return regexp.MustCompile(`^(?:` + re + `)$`).MatchString(s)
}

// dpkgLess: dpkg --compare-versions A lt B.
func dpkgLess(t *testing.T, a, b string) bool {
	t.Helper()

	err := exec.Command("dpkg", "--compare-versions", a, "lt", b).Run()
	if err == nil {
		return true
	}

	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("dpkg --compare-versions: %v", err)
	}

	return false
}

// rpmLess: rpm's own comparison of two [epoch:]version-release strings
// (rpm.ver objects, rpm >= 4.17, the same code dnf and rpm -U use).
func rpmLess(t *testing.T, a, b string) bool {
	t.Helper()

	expr := fmt.Sprintf(`%%{lua:print(rpm.ver(%q) < rpm.ver(%q))}`, a, b)

	out, err := exec.Command("rpm", "--eval", expr).Output()
	if err != nil {
		t.Fatalf("rpm --eval: %v", err)
	}

	switch s := strings.TrimSpace(string(out)); s {
	case "true":
		return true
	case "false":
		return false
	default:
		t.Fatalf("rpm --eval %s: unexpected %q", expr, s)
	}

	return false
}
