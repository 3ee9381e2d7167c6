package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CacheFile is the name of the persisted set in the state directory.
const CacheFile = "endpoints.json"

// cacheDoc is the file's format. Each address carries when discovery last
// confirmed it, so a stale file expires entry by entry instead of pinning
// a node to API servers that are long gone.
type cacheDoc struct {
	Version   int          `json:"version"`
	Endpoints []cacheEntry `json:"endpoints"`
}

type cacheEntry struct {
	Address  string    `json:"address"`
	LastSeen time.Time `json:"last_seen"`
}

// LoadCache returns the addresses in the cache file at path that were
// confirmed within ttl of now, and how many expired. A missing file is an
// empty cache.
func LoadCache(path string, ttl time.Duration, now time.Time) (fresh []string, expired int, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}

	if err != nil {
		return nil, 0, fmt.Errorf("reading cache: %w", err)
	}

	var doc cacheDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, 0, fmt.Errorf("cache %s is corrupt: %w", path, err)
	}

	for _, e := range doc.Endpoints {
		if now.Sub(e.LastSeen) > ttl {
			expired++

			continue
		}

		fresh = append(fresh, e.Address)
	}

	slices.Sort(fresh)

	return slices.Compact(fresh), expired, nil
}

// SaveCache atomically replaces the cache file with addrs, all confirmed
// at now: written to a temporary file, synced, then renamed over the old one.
func SaveCache(path string, addrs []string, now time.Time) error {
	doc := cacheDoc{Version: 1, Endpoints: make([]cacheEntry, 0, len(addrs))}
	for _, a := range addrs {
		doc.Endpoints = append(doc.Endpoints, cacheEntry{Address: a, LastSeen: now.UTC()})
	}

	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding cache: %w", err)
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), ".endpoints-*.json")
	if err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename

	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()

		return fmt.Errorf("writing cache: %w", err)
	}

	if err := tmp.Sync(); err != nil {
		tmp.Close()

		return fmt.Errorf("writing cache: %w", err)
	}

	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}

	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing cache: %w", err)
	}

	return nil
}
