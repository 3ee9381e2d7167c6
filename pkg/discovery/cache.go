package discovery

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CacheFile is the name of the persisted set in the state directory.
const CacheFile = "endpoints.json"

// MaxCacheBytes bounds the cache file that is read: the daemon writes at
// most max_discovered (up to 1,024) entries of ~80 bytes; a larger file was
// not written by it and is ignored.
const MaxCacheBytes = 1 << 20

// ErrCacheTooLarge marks a cache file over MaxCacheBytes.
var ErrCacheTooLarge = fmt.Errorf("cache file larger than %d bytes", MaxCacheBytes)

// cacheDoc is the file's format. Each address carries when discovery last
// confirmed it, so a stale file expires entry by entry instead of pinning
// a node to API servers that are long gone.
type cacheDoc struct {
	Version   int          `json:"version"`
	Endpoints []CacheEntry `json:"endpoints"`
}

// CacheEntry is one cached upstream and when discovery last confirmed it.
type CacheEntry struct {
	Address  string    `json:"address"`
	LastSeen time.Time `json:"last_seen"`
}

// Cached is what LoadCache found.
type Cached struct {
	// Entries are the valid entries confirmed within the TTL, by address,
	// at most Limits.Max (the most recently seen).
	Entries []CacheEntry
	Expired int
	// Dropped says why each invalid entry was left out.
	Dropped []error
	// Clamped counts entries dated in the future, taken as seen now. Write
	// Entries back (WriteCache) so they age from now on, instead of
	// staying fresh at every load until the clock reaches their date.
	Clamped int
}

// Addresses are the entries' addresses, sorted; nil when there are none.
func (c Cached) Addresses() []string {
	var out []string
	for _, e := range c.Entries {
		out = append(out, e.Address)
	}

	return out
}

// LoadCache returns the entries in the cache file at path that are valid
// upstreams (an IP:port that passes l.Check; IPv4-mapped IPv6 is unmapped)
// and were confirmed within ttl of now. A missing file is an empty cache; a
// file over MaxCacheBytes or that is not the cache's JSON is an error.
func LoadCache(path string, ttl time.Duration, now time.Time, l Limits) (Cached, error) {
	var c Cached

	data, err := readBounded(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}

	if err != nil {
		return c, err
	}

	var doc cacheDoc
	if err := json.Unmarshal(data, &doc); err != nil {
		return c, fmt.Errorf("cache %s is corrupt: %w", path, err)
	}

	newest := map[string]time.Time{}

	for _, e := range doc.Endpoints {
		addr, err := cacheAddress(e.Address, l)
		if err != nil {
			c.Dropped = append(c.Dropped, err)

			continue
		}

		seen := e.LastSeen
		if seen.After(now) {
			seen = now
			c.Clamped++
		}

		if now.Sub(seen) > ttl {
			c.Expired++

			continue
		}

		if prev, dup := newest[addr]; !dup || seen.After(prev) {
			newest[addr] = seen
		}
	}

	for addr, seen := range newest {
		c.Entries = append(c.Entries, CacheEntry{Address: addr, LastSeen: seen})
	}

	// The most recently seen first, to keep those under the cap; then by
	// address for the caller.
	slices.SortFunc(c.Entries, func(a, b CacheEntry) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), cmp.Compare(a.Address, b.Address))
	})
	c.Entries = c.Entries[:min(len(c.Entries), l.max())]
	slices.SortFunc(c.Entries, func(a, b CacheEntry) int { return cmp.Compare(a.Address, b.Address) })

	return c, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading cache: %w", err)
	}
	defer f.Close()

	data, err := io.ReadAll(io.LimitReader(f, MaxCacheBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading cache: %w", err)
	}

	if len(data) > MaxCacheBytes {
		return nil, fmt.Errorf("%s: %w", path, ErrCacheTooLarge)
	}

	return data, nil
}

// cacheAddress checks a cached address and returns it in canonical form.
func cacheAddress(a string, l Limits) (string, error) {
	ap, err := netip.ParseAddrPort(a)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not IP:port", ErrUnusable, a)
	}

	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if err := l.Check(ap); err != nil {
		return "", err
	}

	return ap.String(), nil
}

// SaveCache atomically replaces the cache file with addrs, all confirmed
// at now.
func SaveCache(path string, addrs []string, now time.Time) error {
	entries := make([]CacheEntry, 0, len(addrs))
	for _, a := range addrs {
		entries = append(entries, CacheEntry{Address: a, LastSeen: now})
	}

	return WriteCache(path, entries)
}

// WriteCache atomically replaces the cache file with entries: written to a
// temporary file, synced, renamed over the old one, and the directory
// synced, so that after a crash the file is either the old one or the new
// one, and the new one stays.
func WriteCache(path string, entries []CacheEntry) error {
	doc := cacheDoc{Version: 1, Endpoints: make([]CacheEntry, 0, len(entries))}
	for _, e := range entries {
		doc.Endpoints = append(doc.Endpoints, CacheEntry{Address: e.Address, LastSeen: e.LastSeen.UTC()})
	}

	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding cache: %w", err)
	}

	dir := filepath.Dir(path)

	tmp, err := os.CreateTemp(dir, ".endpoints-*.json")
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

	return syncDir(dir)
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing cache directory: %w", err)
	}
	defer d.Close()

	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing cache directory: %w", err)
	}

	return nil
}
