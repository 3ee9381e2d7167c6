//go:build integration

package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// variant is a fleet configuration: the default settings plus extra TOML.
// The four together split the daemon's cost into its checks and its
// discovery.
type variant struct {
	name string
	what string
	toml string
	// discovery is whether the daemons watch the slice, so the fleet is up
	// only once the apiserver holds one watch per daemon.
	discovery bool
}

func variants() []variant {
	return []variant{
		{name: "default", what: "default settings (https checks, discovery on)", discovery: true},
		{name: "no-discovery", what: "`enable_discovery = false`", toml: "enable_discovery = false\n"},
		{name: "tcp", what: "`health_check = \"tcp\"`, discovery on", toml: "health_check = \"tcp\"\n", discovery: true},
		{name: "tcp-no-discovery", what: "`health_check = \"tcp\"`, `enable_discovery = false`", toml: "health_check = \"tcp\"\nenable_discovery = false\n"},
		// Ten times the check rate: what one check costs when the API
		// server gets them as often as from a fleet 10x the size.
		{name: "no-discovery-500ms", what: "`enable_discovery = false`, `health_interval = \"500ms\"`, `health_timeout = \"400ms\"`",
			toml: "enable_discovery = false\nhealth_interval = \"500ms\"\nhealth_timeout = \"400ms\"\n"},
	}
}

func variantName(v variant) string { return v.name }

// daemon is one real extractedprism process of the fleet.
type daemon struct {
	addr string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// fleetUpTimeout bounds the fleet's start: every daemon ready and, with
// discovery, watching.
const fleetUpTimeout = 2 * time.Minute

// startFleet starts n daemons of variant v, each on its own loopback
// address with the default ports, and waits until all are up. On an error
// (a daemon that refuses the variant's settings exits) the fleet is
// stopped.
func (e *env) startFleet(ctx context.Context, tb testing.TB, v variant, n int) ([]*daemon, error) {
	tb.Helper()

	dir := tb.TempDir()
	fleet := make([]*daemon, 0, n)

	tb.Cleanup(func() { stopFleet(tb, fleet) })

	for i := range n {
		d, err := e.startDaemon(filepath.Join(dir, fmt.Sprintf("node-%d", i)), i, v)
		if err != nil {
			stopFleet(tb, fleet)

			return nil, fmt.Errorf("daemon %d: %w", i, err)
		}

		fleet = append(fleet, d)
	}

	ctx, cancel := context.WithTimeout(ctx, fleetUpTimeout)
	defer cancel()

	// The daemons share the machine with the apiserver: asking all of them
	// every half second over new connections (1,000 a second at 500
	// daemons) starved the apiserver until no check passed within its
	// timeout and the fleet never came up. A daemon seen ready is not asked
	// again, and the others are asked over kept-alive connections.
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()

	seen := make([]bool, n)

	err := kubeharness.Poll(ctx, 2*time.Second, func(ctx context.Context) (bool, string, error) {
		for _, d := range fleet {
			select {
			case <-d.done:
				return false, "", fmt.Errorf("daemon %s exited:\n%s", d.addr, tail(d.log))
			default:
			}
		}

		ready := countReady(ctx, client, fleet, seen)
		if ready < n {
			return false, fmt.Sprintf("%d/%d daemons ready", ready, n), nil
		}

		if !v.discovery {
			return true, "", nil
		}

		m, err := e.scrape(ctx)
		if err != nil {
			return false, err.Error(), nil
		}

		w := m.sum("apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "endpointslices"})

		return int(w) >= n, fmt.Sprintf("%d/%d daemons ready, %.0f/%d watching", ready, n, w, n), nil
	})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		stopFleet(tb, fleet)

		return nil, fmt.Errorf("fleet %s: not up within %v: %w\nlast daemon log:\n%s", v.name, fleetUpTimeout, err, tail(fleet[n-1].log))
	case err != nil: // a daemon exited
		stopFleet(tb, fleet)

		return nil, fmt.Errorf("fleet %s: %w", v.name, err)
	}

	return fleet, nil
}

func (e *env) startDaemon(dir string, i int, v variant) (*daemon, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}

	addr := nodeAddr(i)
	kubeconfig := filepath.Join(dir, "kubeconfig")

	// Its server is not used: discovery connects through the daemon itself.
	if err := e.pki.CertKubeconfig(kubeconfig, e.api.URL(), e.certs[i]); err != nil {
		return nil, err
	}

	cfg := fmt.Sprintf("bind_address = %q\nhealth_address = %q\nendpoints = [%q]\nkubeconfig = %q\nhealth_ca_file = %q\nstate_directory = %q\n%s",
		addr, addr, e.apiAddr(), kubeconfig, e.pki.CACertFile, dir, v.toml)

	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}

	logFile, err := os.Create(filepath.Join(dir, "daemon.log"))
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(e.s.daemon, "run", "--config", path)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The daemons die with the benchmark, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	if err := cmd.Start(); err != nil {
		logFile.Close()

		return nil, err
	}

	d := &daemon{addr: addr, cmd: cmd, log: logFile.Name(), done: make(chan struct{})}

	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(d.done)
	}()

	return d, nil
}

// countReady asks the daemons not seen ready yet for their /readyz (health
// port 7446, the default), and marks those that are in seen.
func countReady(ctx context.Context, client *http.Client, fleet []*daemon, seen []bool) int {
	ready := 0

	for i, d := range fleet {
		if seen[i] {
			ready++

			continue
		}

		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addr+":7446/readyz", nil)
		if err != nil {
			continue
		}

		resp, err := client.Do(req)
		if err != nil {
			continue
		}

		_, _ = io.Copy(io.Discard, resp.Body) // so that the connection is kept
		resp.Body.Close()

		if resp.StatusCode == http.StatusOK {
			seen[i] = true
			ready++
		}
	}

	return ready
}

// daemonStopGrace bounds a daemon's shutdown (its drain_timeout is 5 s).
const daemonStopGrace = 15 * time.Second

// stopFleet stops every daemon at once: SIGTERM, then SIGKILL after the
// grace period. Stopped daemons are skipped, so it may run twice.
func stopFleet(tb testing.TB, fleet []*daemon) {
	tb.Helper()

	var wg sync.WaitGroup

	for _, d := range fleet {
		if d == nil {
			continue
		}

		wg.Go(func() {
			_ = d.cmd.Process.Signal(syscall.SIGTERM)

			select {
			case <-d.done:
			case <-time.After(daemonStopGrace):
				tb.Logf("daemon %s: no exit %v after SIGTERM; killing it", d.addr, daemonStopGrace)
				_ = d.cmd.Process.Kill()
				<-d.done
			}
		})
	}

	wg.Wait()
}

func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}

	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")

	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// fleetResult is one fleet variant's window.
type fleetResult struct {
	variant  variant
	nodes    int
	measured framed
	// daemonCPU is the daemons' own CPU, per daemon, in CPU-s per second.
	daemonCPU float64
	// traffic is what the apiserver saw in the window.
	traffic traffic
	// skipped says why the variant was not measured.
	skipped string
}

// measureFleet runs s.nodes daemons of variant v and measures their window.
// Only the default variant must work: a daemon of another commit may not
// know the other variants' settings, which is reported, not fatal.
func (e *env) measureFleet(ctx context.Context, b *testing.B, v variant) fleetResult {
	b.Helper()

	r := fleetResult{variant: v, nodes: e.s.nodes}
	b.Logf("fleet %s: %d daemons, %s", v.name, e.s.nodes, v.what)

	var err error

	r.measured, err = e.meter.frame(ctx, b, e.s, e.s.fleetWindow, func() (func() usage, error) {
		start := time.Now()

		fleet, err := e.startFleet(ctx, b, v, e.s.nodes)
		if err != nil {
			return nil, err
		}

		b.Logf("fleet %s: %d daemons up after %v; settling %v", v.name, e.s.nodes, time.Since(start).Round(time.Millisecond), e.s.settle)
		time.Sleep(e.s.settle)

		return func() usage {
			pids := map[string]int{}
			for i, d := range fleet {
				pids[fmt.Sprint(i)] = d.cmd.Process.Pid
			}

			dm := newMeter(b, pids)
			d0 := dm.sample(b)
			t0 := e.snapshot(ctx, b)

			u := e.meter.over(ctx, b, e.s.fleetWindow)

			r.traffic = e.snapshot(ctx, b).minus(t0)
			if err := noisyLog(r.traffic); err != nil {
				b.Errorf("fleet %s: %v", v.name, err)
			}

			for _, cpu := range dm.since(b, d0) {
				r.daemonCPU += cpu / float64(len(fleet))
			}

			stopFleet(b, fleet)

			return u
		}, nil
	})

	switch {
	case err != nil && v.name == variants()[0].name:
		b.Fatal(err)
	case err != nil:
		r.skipped = err.Error()
		b.Logf("fleet %s: not measured: %v", v.name, err)
	default:
		b.Logf("fleet %s: apiserver %.1f ms/s over idle %.1f / %.1f, daemons %.3f %% each", v.name, r.measured.net("apiserver")*1e3,
			r.measured.before["apiserver"]*1e3, r.measured.after["apiserver"]*1e3, r.daemonCPU*100)
	}

	return r
}
