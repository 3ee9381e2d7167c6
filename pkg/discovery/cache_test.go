package discovery

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCacheRoundTripAndExpiry(t *testing.T) {
	t.Parallel()

	path := filepath.Join(t.TempDir(), CacheFile)
	now := time.Now()

	if got, expired, err := LoadCache(path, time.Hour, now); got != nil || expired != 0 || err != nil {
		t.Fatalf("missing file: %v %d %v, want an empty cache", got, expired, err)
	}

	if err := SaveCache(path, []string{"10.0.0.2:6443", "10.0.0.1:6443"}, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}

	if got, _, err := LoadCache(path, 3*time.Hour, now); err != nil || !slices.Equal(got, []string{"10.0.0.1:6443", "10.0.0.2:6443"}) {
		t.Fatalf("fresh: %v %v", got, err)
	}

	if got, expired, err := LoadCache(path, time.Hour, now); err != nil || got != nil || expired != 2 {
		t.Fatalf("stale: %v, %d expired, %v; want none and 2 expired", got, expired, err)
	}

	// No temporary file is left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("state directory holds %d files, want 1", len(entries))
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, _, err := LoadCache(path, time.Hour, now); err == nil {
		t.Fatal("a corrupt cache loaded without error")
	}
}

// A cache that cannot be read or written is an error that names the
// problem, and a failed write leaves the old file and no temporary file.
func TestCacheErrors(t *testing.T) {
	t.Parallel()

	now := time.Now()
	dir := t.TempDir()

	if _, _, err := LoadCache(dir, time.Hour, now); err == nil || !strings.Contains(err.Error(), "reading cache") {
		t.Fatalf("loading a directory: %v, want a read error", err)
	}

	if err := SaveCache(filepath.Join(dir, "missing", CacheFile), []string{"10.0.0.1:6443"}, now); err == nil ||
		!strings.Contains(err.Error(), "writing cache") {
		t.Fatalf("saving into a missing directory: %v, want a write error", err)
	}

	// The rename fails: a directory with something in it is in the way.
	blocked := filepath.Join(dir, "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "x"), 0o700); err != nil {
		t.Fatal(err)
	}

	if err := SaveCache(blocked, []string{"10.0.0.1:6443"}, now); err == nil || !strings.Contains(err.Error(), "writing cache") {
		t.Fatalf("saving over a directory: %v, want a write error", err)
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}

	for _, e := range entries {
		if e.Name() != "blocked" {
			t.Fatalf("%s left behind after failed writes", e.Name())
		}
	}
}
