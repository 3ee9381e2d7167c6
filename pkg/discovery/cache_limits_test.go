package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeCacheFile(t *testing.T, text string) string {
	t.Helper()

	path := filepath.Join(t.TempDir(), CacheFile)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	return path
}

func entryJSON(addr string, seen time.Time) string {
	return fmt.Sprintf(`{"address": %q, "last_seen": %q}`, addr, seen.UTC().Format(time.RFC3339Nano))
}

func cacheJSON(entries ...string) string {
	return `{"version": 1, "endpoints": [` + strings.Join(entries, ",") + `]}`
}

// Only IP:port upstreams that could be API servers come back from the
// cache; IPv4-mapped IPv6 comes back as IPv4, as everywhere else.
func TestCacheValidatesEntries(t *testing.T) {
	t.Parallel()

	now := time.Now()
	self := netip.MustParseAddrPort("10.0.0.9:7445")
	var entries []string

	for _, a := range []string{
		"10.0.0.1:6443", "api.example:6443", "garbage", "10.0.0.4", "10.0.0.2:0", "127.0.0.1:6443",
		"[fe80::1%eth0]:6443", "[::ffff:10.0.0.3]:6443", "10.0.0.9:7445", "224.0.0.1:6443", "",
		"0.0.0.0:6443", "169.254.169.254:80", "10.0.0.1:6443",
	} {
		entries = append(entries, entryJSON(a, now.Add(-time.Minute)))
	}

	c, err := LoadCache(writeCacheFile(t, cacheJSON(entries...)), time.Hour, now, Limits{Self: func(ap netip.AddrPort) bool { return ap == self }})
	if err != nil {
		t.Fatal(err)
	}

	if got := c.Addresses(); !slices.Equal(got, []string{"10.0.0.1:6443", "10.0.0.3:6443"}) {
		t.Errorf("addresses %v, want 10.0.0.1:6443 and 10.0.0.3:6443", got)
	}

	if len(c.Dropped) != 11 {
		t.Errorf("%d dropped, want 11: %v", len(c.Dropped), c.Dropped)
	}
}

// A last_seen in the future (a clock that was wrong, or a hand-edited
// file) counts as seen now: the entry is used, and it expires cache_ttl
// after this load once the caller writes the clamped entries back.
func TestCacheClampsFutureLastSeen(t *testing.T) {
	t.Parallel()

	now := time.Now()
	path := writeCacheFile(t, cacheJSON(entryJSON("10.0.0.1:6443", now.Add(24*365*time.Hour)), entryJSON("10.0.0.2:6443", now.Add(-time.Minute))))

	c, err := LoadCache(path, time.Hour, now, Limits{})
	if err != nil || c.Clamped != 1 || len(c.Entries) != 2 {
		t.Fatalf("%+v, %v; want 2 entries, 1 clamped", c, err)
	}

	for _, e := range c.Entries {
		if e.LastSeen.After(now) {
			t.Errorf("%s last seen %s, after now %s", e.Address, e.LastSeen, now)
		}
	}

	if err := WriteCache(path, c.Entries); err != nil {
		t.Fatal(err)
	}

	c, err = LoadCache(path, time.Hour, now.Add(time.Hour+time.Second), Limits{})
	if err != nil || c.Addresses() != nil || c.Expired != 2 {
		t.Fatalf("an hour later: %v, %d expired, %v; want both expired", c.Addresses(), c.Expired, err)
	}
}

// The cache holds at most Limits.Max entries, the most recently seen.
func TestCacheCap(t *testing.T) {
	t.Parallel()

	now := time.Now()

	var entries []string
	for i := range 100 {
		entries = append(entries, entryJSON(fmt.Sprintf("10.0.1.%d:6443", i+1), now.Add(-time.Duration(i)*time.Second)))
	}

	c, err := LoadCache(writeCacheFile(t, cacheJSON(entries...)), time.Hour, now, Limits{Max: 10})
	if err != nil || len(c.Entries) != 10 {
		t.Fatalf("%d entries, %v; want 10", len(c.Entries), err)
	}

	for _, e := range c.Entries {
		if e.LastSeen.Before(now.Add(-9 * time.Second)) {
			t.Errorf("kept %s, seen %s ago: not among the 10 most recent", e.Address, now.Sub(e.LastSeen))
		}
	}
}

// A file larger than MaxCacheBytes is not read, whatever it holds.
func TestCacheSizeLimit(t *testing.T) {
	t.Parallel()

	now := time.Now()
	doc := cacheJSON(entryJSON("10.0.0.1:6443", now))
	pad := bytes.Repeat([]byte(" "), MaxCacheBytes-len(doc))
	path := writeCacheFile(t, doc+string(pad))

	if c, err := LoadCache(path, time.Hour, now, Limits{}); err != nil || len(c.Entries) != 1 {
		t.Fatalf("a file of exactly %d bytes: %+v, %v; want it loaded", MaxCacheBytes, c, err)
	}

	if err := os.WriteFile(path, []byte(doc+string(pad)+" "), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, err := LoadCache(path, time.Hour, now, Limits{}); !errors.Is(err, ErrCacheTooLarge) {
		t.Fatalf("a file of %d bytes: %v, want ErrCacheTooLarge", MaxCacheBytes+1, err)
	}
}

// SaveCache makes the rename durable: after renaming the new file over
// the old one it fsyncs the directory. Watched with strace, which sees the
// real system calls of a child process running only SaveCache.
func TestSaveCacheSyncsTheDirectory(t *testing.T) {
	t.Parallel()

	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed (apt-get install strace); .ci/run installs it")
	}

	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(strace, "-f", "-y", "-e", "trace=rename,renameat,renameat2,fsync,fdatasync", "-o", "/dev/stdout",
		"env", "EP_SAVE_CACHE_INTO="+dir, self).Output() // TestMain runs only SaveCache
	if err != nil {
		t.Fatalf("strace: %v\n%s", err, out)
	}

	var renamed, synced bool

	for _, line := range strings.Split(string(out), "\n") {
		switch {
		case strings.Contains(line, "rename") && strings.Contains(line, CacheFile):
			renamed = true
		case renamed && strings.Contains(line, "fsync(") && strings.Contains(line, "<"+dir+">"):
			synced = true
		}
	}

	if !renamed || !synced {
		t.Fatalf("want a rename onto %s, then an fsync of %s; strace saw:\n%s", CacheFile, dir, out)
	}
}
