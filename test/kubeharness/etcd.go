package kubeharness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	etcdStartTimeout = 30 * time.Second
	etcdStopGrace    = 15 * time.Second
	etcdPollInterval = 50 * time.Millisecond
)

// Etcd is a single-member etcd on 127.0.0.1 with kernel-chosen ports.
type Etcd struct {
	// ClientURL is what apiservers get as --etcd-servers.
	ClientURL string
	DataDir   string

	proc *process
	http *http.Client

	mu         sync.Mutex
	apiservers []attached
}

// attached remembers which test started an apiserver, so that test's cleanup
// can stop all of its apiservers at once.
type attached struct {
	owner testing.TB
	a     *APIServer
}

// StartEtcd starts etcd with its data and log in dir (t.TempDir() when empty)
// and waits until /health reports true. The test's cleanup stops every
// apiserver started on it first, then etcd.
func StartEtcd(t testing.TB, dir string) *Etcd {
	t.Helper()

	bin := BinDir(t)

	if dir == "" {
		dir = t.TempDir()
	}

	e, err := newEtcd(bin, dir)
	if err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	e.proc.dumpLogOnFailure(t)
	t.Cleanup(func() {
		start := time.Now()
		if err := e.Stop(); err != nil {
			t.Errorf("kubeharness: cleanup: %v", err)
		}

		t.Logf("kubeharness: etcd and its remaining apiservers stopped in %v", time.Since(start).Round(time.Millisecond))
	})

	start := time.Now()
	if err := e.start(); err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	t.Logf("kubeharness: etcd healthy at %s after %v", e.ClientURL, time.Since(start).Round(time.Millisecond))

	return e
}

func newEtcd(bin, dir string) (*Etcd, error) {
	ports, err := freePorts("127.0.0.1", 2)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}

	clientURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dataDir := filepath.Join(dir, "etcd-data")

	args := []string{
		"--name=harness",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=harness=" + peerURL,
		// Durability is irrelevant for a throwaway test store; fsync is
		// most of etcd's write latency.
		"--unsafe-no-fsync",
	}

	return &Etcd{
		ClientURL: clientURL,
		DataDir:   dataDir,
		proc: &process{
			name:    "etcd",
			bin:     filepath.Join(bin, "etcd"),
			args:    args,
			logPath: filepath.Join(dir, "etcd.log"),
		},
		http: &http.Client{Timeout: 5 * time.Second},
	}, nil
}

func (e *Etcd) start() error {
	if err := os.MkdirAll(filepath.Dir(e.DataDir), 0o700); err != nil {
		return fmt.Errorf("etcd: create dir: %w", err)
	}

	if err := e.proc.start(); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), etcdStartTimeout)
	defer cancel()

	if err := waitReady(ctx, e.proc, etcdPollInterval, e.healthy); err != nil {
		return fmt.Errorf("etcd at %s: %w\n%s", e.ClientURL, err, e.proc.logTail(logTailLines))
	}

	return nil
}

// waitReady polls ready until it succeeds, ctx ends, or the process exits;
// the last keeps a crash at start-up from costing the full timeout.
func waitReady(ctx context.Context, p *process, interval time.Duration, ready func(context.Context) (bool, string, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	exited := p.exited()

	go func() {
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()

	err := Poll(ctx, interval, ready)
	if err != nil && isClosed(exited) {
		return fmt.Errorf("%s exited before becoming ready", p.name)
	}

	return err
}

func (e *Etcd) healthy(ctx context.Context) (bool, string, error) {
	var health struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}

	if err := e.call(ctx, http.MethodGet, "/health", nil, &health); err != nil {
		return false, err.Error(), nil
	}

	return health.Health == "true", "health=" + health.Health + " " + health.Reason, nil
}

// Stop stops every apiserver still running on this etcd (in parallel), then
// etcd itself. An apiserver that loses etcd while terminating hangs for tens
// of seconds, hence the order, and etcd is resumed first if it was paused.
func (e *Etcd) Stop() error {
	return errors.Join(e.Resume(), stopAll(e.apiserversOf(nil)), e.proc.stop(etcdStopGrace))
}

// Pause SIGSTOPs etcd, like a stalled one (a full disk, a long fsync, a
// stuck leader): connections to it stay open and are accepted, and nothing
// is answered. The apiservers' /readyz fails once their etcd check times
// out. Resume continues it.
func (e *Etcd) Pause() error { return e.proc.pause() }

// Resume SIGCONTs a paused etcd; it is harmless on a running one.
func (e *Etcd) Resume() error { return e.proc.resume() }

// Kill SIGKILLs etcd without touching the apiservers.
func (e *Etcd) Kill() error { return e.proc.kill() }

// PID is etcd's process ID (0 before it started).
func (e *Etcd) PID() int { return e.proc.pid() }

func (e *Etcd) attach(owner testing.TB, a *APIServer) {
	e.mu.Lock()
	defer e.mu.Unlock()

	e.apiservers = append(e.apiservers, attached{owner: owner, a: a})
}

// apiserversOf lists the apiservers started by owner, or all when owner is nil.
func (e *Etcd) apiserversOf(owner testing.TB) []*APIServer {
	e.mu.Lock()
	defer e.mu.Unlock()

	var out []*APIServer

	for _, at := range e.apiservers {
		if owner == nil || at.owner == owner {
			out = append(out, at.a)
		}
	}

	return out
}

// cleanupAPIServersOf stops the apiservers owner started that still run.
func (e *Etcd) cleanupAPIServersOf(owner testing.TB) {
	var running []*APIServer

	for _, a := range e.apiserversOf(owner) {
		if a.Running() {
			running = append(running, a)
		}
	}

	if len(running) == 0 {
		return
	}

	start := time.Now()
	if err := errors.Join(e.Resume(), stopAll(running)); err != nil {
		owner.Errorf("kubeharness: cleanup: %v", err)
	}

	owner.Logf("kubeharness: stopped %d apiserver(s) in %v", len(running), time.Since(start).Round(time.Millisecond))
}

// Revision returns etcd's current store revision.
func (e *Etcd) Revision(ctx context.Context) (int64, error) {
	// Any range request returns the store revision in its header; "/" keeps
	// the answer empty because apiserver keys start with /registry/.
	req := map[string]any{"key": []byte("/"), "limit": 1}

	var resp struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}

	if err := e.call(ctx, http.MethodPost, "/v3/kv/range", req, &resp); err != nil {
		return 0, fmt.Errorf("etcd revision: %w", err)
	}

	rev, err := strconv.ParseInt(resp.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd revision: parse %q: %w", resp.Header.Revision, err)
	}

	return rev, nil
}

// Compact compacts etcd at its current revision and returns that revision.
// Afterwards a watch resuming from an older resourceVersion gets 410 Gone
// from apiservers started with APIServerOptions.NoEndpointSliceWatchCache
// (or restarted since), which is how tests exercise re-listing.
func (e *Etcd) Compact(ctx context.Context) (int64, error) {
	rev, err := e.Revision(ctx)
	if err != nil {
		return 0, err
	}

	// physical: return only once the compaction is applied to the backend, so
	// the caller can rely on it immediately.
	req := map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}
	if err := e.call(ctx, http.MethodPost, "/v3/kv/compaction", req, nil); err != nil {
		return 0, fmt.Errorf("etcd compact at revision %d: %w", rev, err)
	}

	return rev, nil
}

// call talks to etcd's gRPC-gateway (JSON over HTTP), which keeps the harness
// free of the etcd client module. []byte fields marshal as base64, which is
// what the gateway expects for keys.
func (e *Etcd) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader

	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s request: %w", path, err)
		}

		body = bytes.NewReader(data)
	}

	req, err := http.NewRequestWithContext(ctx, method, e.ClientURL+path, body)
	if err != nil {
		return fmt.Errorf("build %s request: %w", path, err)
	}

	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()

	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}

	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
	}

	if out == nil {
		return nil
	}

	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode %q: %w", method, path, data, err)
	}

	return nil
}
