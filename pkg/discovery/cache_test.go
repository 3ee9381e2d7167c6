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

	if c, err := LoadCache(path, time.Hour, now, Limits{}); c.Addresses() != nil || c.Expired != 0 || err != nil {
		t.Fatalf("missing file: %+v %v, want an empty cache", c, err)
	}

	if err := SaveCache(path, []string{"10.0.0.2:6443", "10.0.0.1:6443"}, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}

	if c, err := LoadCache(path, 3*time.Hour, now, Limits{}); err != nil || !slices.Equal(c.Addresses(), []string{"10.0.0.1:6443", "10.0.0.2:6443"}) {
		t.Fatalf("fresh: %v %v", c.Addresses(), err)
	}

	if c, err := LoadCache(path, time.Hour, now, Limits{}); err != nil || c.Addresses() != nil || c.Expired != 2 {
		t.Fatalf("stale: %v, %d expired, %v; want none and 2 expired", c.Addresses(), c.Expired, err)
	}

	// No temporary file is left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("state directory holds %d files, want 1", len(entries))
	}

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, err := LoadCache(path, time.Hour, now, Limits{}); err == nil {
		t.Fatal("a corrupt cache loaded without error")
	}
}

// A cache that cannot be read or written is an error that names the
// problem, and a failed write leaves the old file and no temporary file.
func TestCacheErrors(t *testing.T) {
	t.Parallel()

	now := time.Now()
	dir := t.TempDir()

	if _, err := LoadCache(dir, time.Hour, now, Limits{}); err == nil || !strings.Contains(err.Error(), "reading cache") {
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
