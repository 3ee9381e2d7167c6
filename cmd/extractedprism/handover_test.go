package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tally counts a client loop's outcomes.
type tally struct{ ok, refused, reset, other atomic.Int64 }

// clientLoop connects to addr over and over, each time waiting for the
// upstream's greeting, until stop is closed or maxConns were made.
func clientLoop(addr string, workers, maxConns int, stop <-chan struct{}) *tally {
	var (
		t    tally
		left atomic.Int64
		wg   sync.WaitGroup
	)

	left.Store(int64(maxConns))

	for range workers {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				select {
				case <-stop:
					return
				default:
				}

				t.one(addr)
			}
		})
	}

	wg.Wait()

	return &t
}

func (t *tally) one(addr string) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.count(err)

		return
	}
	defer c.Close()

	_ = c.SetDeadline(time.Now().Add(5 * time.Second))

	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.count(err)

		return
	}

	t.ok.Add(1)
}

func (t *tally) count(err error) {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		t.refused.Add(1)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		t.reset.Add(1)
	default:
		t.other.Add(1)
	}
}

// probeClient opens a connection per request, as kubelet's probes do: a
// kept-alive one would stay with the copy that accepted it.
var probeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

type statusDoc struct {
	Ready     bool      `json:"ready"`
	StartedAt time.Time `json:"started_at"`
}

func getStatus(url string) (statusDoc, int, error) {
	var s statusDoc

	resp, err := probeClient.Get(url) //nolint:noctx // a test URL
	if err != nil {
		return s, 0, err
	}
	defer resp.Body.Close()

	err = json.NewDecoder(resp.Body).Decode(&s)

	return s, resp.StatusCode, err
}

func statusCode(url string) int {
	resp, err := probeClient.Get(url) //nolint:noctx // a test URL
	if err != nil {
		return 0
	}

	_ = resp.Body.Close()

	return resp.StatusCode
}

// waitFor polls cond: the state is another process's.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("%s: not within %s", what, within)
		}

		time.Sleep(20 * time.Millisecond)
	}
}

// TestRollingHandOverRefusesNothing is a DaemonSet update with maxSurge 1
// on one node: the old copy serves, the new one binds the same port
// (SO_REUSEPORT), becomes ready and takes the new connections over, and
// then the old one is sent SIGTERM, all under a client loop. Not one
// connection may be refused or reset.
func TestRollingHandOverRefusesNothing(t *testing.T) {
	t.Parallel()

	const ip = "127.0.8.2"

	up := greeter(t, "127.0.8.1:0", "up")
	port, healthPort := freePort(t, ip), freePort(t, ip)
	proxy, health := ip+":"+port, "http://"+ip+":"+healthPort

	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte(`endpoints = ["`+up+`"]
bind_address = "`+ip+`"
bind_port = `+port+`
health_address = "`+ip+`"
health_port = `+healthPort+`
health_check = "tcp"
enable_discovery = false
drain_timeout = "2s"
state_directory = ""
`), 0o600); err != nil {
		t.Fatal(err)
	}

	self, err := exec.LookPath("extractedprism")
	if err != nil {
		t.Fatal(err)
	}

	start := func(name string) (*exec.Cmd, *syncBuffer) {
		var log syncBuffer

		cmd := exec.Command(self, "run", "--config", cfg)
		cmd.Stderr = &log

		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}

		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()

			if t.Failed() {
				t.Logf("%s daemon's log:\n%s", name, log.String())
			}
		})

		return cmd, &log
	}

	old, _ := start("old")

	var oldStatus statusDoc

	waitFor(t, 20*time.Second, "the old copy ready", func() bool {
		if statusCode(health+"/readyz") != http.StatusOK {
			return false
		}

		var err error
		oldStatus, _, err = getStatus(health + "/status")

		return err == nil && oldStatus.Ready
	})

	stop := make(chan struct{})
	done := make(chan *tally, 1)

	go func() { done <- clientLoop(proxy, 32, 200000, stop) }()

	// Some traffic on the old copy alone first.
	time.Sleep(300 * time.Millisecond)

	_, newLog := start("new")

	// The new copy's health port takes kubelet's probes at once; its
	// /readyz answers 200 only after it took the proxy's connections over.
	waitFor(t, 20*time.Second, "the new copy ready", func() bool {
		s, _, err := getStatus(health + "/status")
		if err != nil || !s.StartedAt.After(oldStatus.StartedAt) {
			return false
		}

		return statusCode(health+"/readyz") == http.StatusOK
	})

	time.Sleep(300 * time.Millisecond)

	termAt := time.Now()
	if err := old.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	if err := old.Wait(); err != nil {
		t.Fatalf("old copy: %v", err)
	}

	exited := time.Since(termAt)

	time.Sleep(300 * time.Millisecond)
	close(stop)

	res := <-done
	t.Logf("hand-over under a client loop: %d served, %d refused, %d reset, %d other; old copy exited %s after SIGTERM",
		res.ok.Load(), res.refused.Load(), res.reset.Load(), res.other.Load(), exited.Round(time.Millisecond))

	if res.refused.Load() != 0 || res.reset.Load() != 0 || res.other.Load() != 0 {
		t.Errorf("connections lost in the hand-over; new copy's log:\n%s", newLog.String())
	}

	if res.ok.Load() < 100 {
		t.Errorf("only %d connections served: the loop did not run through the hand-over", res.ok.Load())
	}

	// The new copy serves alone now and took index 0 back.
	waitFor(t, 5*time.Second, "the new copy alone on the port", func() bool {
		return strings.Contains(newLog.String(), "alone on the port")
	})
}
