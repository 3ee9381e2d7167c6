package discovery

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMain lets TestSaveCacheSyncsTheDirectory run this test binary as a
// child that only saves a cache (EP_SAVE_CACHE_INTO), under strace.
func TestMain(m *testing.M) {
	if dir := os.Getenv("EP_SAVE_CACHE_INTO"); dir != "" {
		if err := SaveCache(filepath.Join(dir, CacheFile), []string{"10.0.0.1:6443"}, time.Now()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}

		os.Exit(0)
	}

	os.Exit(m.Run())
}
