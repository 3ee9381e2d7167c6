package kubeharness

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BinDir returns the directory named by KUBE_BINS, after checking that it
// holds the kube-apiserver and etcd binaries. It fails the test when they are
// missing instead of skipping, so CI cannot pass without running the suite.
func BinDir(t testing.TB) string {
	t.Helper()

	dir, err := binDir(os.Getenv("KUBE_BINS"))
	if err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	return dir
}

// Kubectl returns the kubectl that hack/kube-bins builds next to the
// apiserver, of the same version. It fails the test when it is missing:
// a check that quietly does nothing without kubectl would pass on any
// machine that lacks it.
func Kubectl(t testing.TB) string {
	t.Helper()

	path := filepath.Join(BinDir(t), "kubectl")
	if err := checkExecutable(path); err != nil {
		t.Fatalf("kubeharness: %v; hack/kube-bins/build.sh builds kubectl with the apiserver "+
			"(KUBE_BINS may name a directory from before it did)", err)
	}

	return path
}

func binDir(dir string) (string, error) {
	const hint = "build them with `export KUBE_BINS=$(hack/kube-bins/build.sh | tail -1)` " +
		"(about 10 minutes on a cold cache, seconds afterwards)"

	if dir == "" {
		return "", fmt.Errorf("KUBE_BINS is not set; it must name a directory holding kube-apiserver and etcd: %s", hint)
	}

	for _, name := range []string{"kube-apiserver", "etcd"} {
		if err := checkExecutable(filepath.Join(dir, name)); err != nil {
			return "", fmt.Errorf("KUBE_BINS=%s: %w; %s", dir, err, hint)
		}
	}

	return dir, nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat binary: %w", err)
	}

	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}

	return nil
}
