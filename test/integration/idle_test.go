//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/status"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// BenchmarkIdleWithDiscovery is the daemon at rest on a node, as systemd
// runs it: the built binary with the default settings, one static endpoint,
// discovery watching three real API servers. Once discovery has found all
// three and two health-check rounds have passed, it reports the resident
// memory and the CPU over a quiet window (targets: under 25 MiB, about
// zero apart from the checks). Run by `make bench-discovery`, which builds
// the binary.
func BenchmarkIdleWithDiscovery(b *testing.B) {
	bin, err := filepath.Abs("../../bin/extractedprism")
	if err != nil {
		b.Fatal(err)
	}

	ips := []string{kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3}
	c := startCluster(b, kubeharness.APIServerOptions{}, true, ips...)
	dir := b.TempDir()
	cfg := filepath.Join(dir, "config.toml")

	// The private namespace has its own loopback: the default ports are free.
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "endpoints = [%q]\nkubeconfig = %q\nstate_directory = %q\n",
		addr(ips[0]), c.kubeconfig(b), dir), 0o600); err != nil {
		b.Fatal(err)
	}

	daemon := exec.Command(bin, "run", "--config", cfg)
	daemon.Stderr = os.Stderr

	if err := daemon.Start(); err != nil {
		b.Fatal(err)
	}

	b.Cleanup(func() { _ = daemon.Process.Signal(os.Interrupt); _ = daemon.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var doc status.Document

	err = kubeharness.Poll(ctx, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		doc, _, err = status.Fetch(ctx, "http://127.0.0.1:7446")

		return err == nil && strings.HasPrefix(doc.Summary(), "3/3 upstreams healthy"), doc.Summary(), nil
	})
	if err != nil {
		b.Fatalf("discovery never found the three API servers: %v", err)
	}

	// Two default check intervals (5 s): the checks' connections and the
	// watch's first exchanges are behind it.
	time.Sleep(10 * time.Second)

	pid := daemon.Process.Pid
	t0, start := cpuTicks(b, pid), time.Now()

	b.ResetTimer()
	time.Sleep(10 * time.Second)
	b.StopTimer()

	cpu := float64(cpuTicks(b, pid)-t0) / 100 / time.Since(start).Seconds() * 100
	rss, anon, file := statusKiB(b, pid, "VmRSS"), statusKiB(b, pid, "RssAnon"), statusKiB(b, pid, "RssFile")

	b.ReportMetric(float64(rss)/1024, "RSS-MiB")
	b.ReportMetric(float64(anon)/1024, "anon-MiB")
	b.ReportMetric(cpu, "idle-CPU-%")
	b.Logf("%s; RSS %.1f MiB (%.1f anonymous, %.1f of the binary and libraries), CPU %.2f %% over 10 s",
		doc.Summary(), float64(rss)/1024, float64(anon)/1024, float64(file)/1024, cpu)
}

// cpuTicks is the process's user and system time in clock ticks (1/100 s).
func cpuTicks(tb testing.TB, pid int) int {
	tb.Helper()

	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}

	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))

	return atoi(tb, f[11]) + atoi(tb, f[12])
}

// statusKiB reads a "Name: N kB" line of /proc/PID/status.
func statusKiB(tb testing.TB, pid int, name string) int {
	tb.Helper()

	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}

	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return atoi(tb, strings.Fields(v)[0])
		}
	}

	tb.Fatalf("no %s in /proc/%d/status", name, pid)

	return 0
}

func atoi(tb testing.TB, s string) int {
	tb.Helper()

	n, err := strconv.Atoi(s)
	if err != nil {
		tb.Fatal(err)
	}

	return n
}
