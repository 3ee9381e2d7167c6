package discovery

import (
	"os"
	"path/filepath"
	"slices"
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
