//go:build integration

package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// meter reads the CPU time of named processes from /proc/PID/stat.
type meter struct {
	pids map[string]int
	hz   float64 // clock ticks per second

	// idle is the last idle window, if nothing ran since: the next
	// measurement uses it as its "before" baseline.
	idle *usage
}

type cpuSample struct {
	at    time.Time
	ticks map[string]uint64
}

func newMeter(tb testing.TB, pids map[string]int) *meter {
	tb.Helper()

	return &meter{pids: pids, hz: clockTicks(tb)}
}

// clockTicks is CLK_TCK, the unit of utime and stime: 100 on every common
// Linux, asked of getconf in case this one differs.
func clockTicks(tb testing.TB) float64 {
	tb.Helper()

	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		tb.Logf("getconf CLK_TCK: %v; assuming 100", err)

		return 100
	}

	hz, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || hz <= 0 {
		tb.Fatalf("getconf CLK_TCK: %q", out)
	}

	return hz
}

func (m *meter) sample(tb testing.TB) cpuSample {
	tb.Helper()

	s := cpuSample{at: time.Now(), ticks: map[string]uint64{}}

	for name, pid := range m.pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			tb.Fatalf("%s: read CPU time: %v", name, err)
		}

		t, err := statTicks(string(raw))
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}

		s.ticks[name] = t
	}

	return s
}

func (m *meter) since(tb testing.TB, start cpuSample) usage {
	tb.Helper()

	end := m.sample(tb)
	secs := end.at.Sub(start.at).Seconds()
	u := usage{}

	for name, t := range end.ticks {
		u[name] = float64(t-start.ticks[name]) / m.hz / secs
	}

	return u
}

// over measures a window of d, or until ctx ends.
func (m *meter) over(ctx context.Context, tb testing.TB, d time.Duration) usage {
	tb.Helper()

	start := m.sample(tb)

	select {
	case <-ctx.Done():
	case <-time.After(d):
	}

	return m.since(tb, start)
}

// baseline returns the idle window that ends right now: the last one if
// nothing ran since, else a new one of length d.
func (m *meter) baseline(ctx context.Context, tb testing.TB, d time.Duration) usage {
	tb.Helper()

	if m.idle != nil {
		return *m.idle
	}

	u := m.over(ctx, tb, d)
	m.idle = &u

	return u
}

// busy forgets the last idle window: something ran.
func (m *meter) busy() { m.idle = nil }

// quiet lets closing connections and exiting processes finish before an
// idle window starts.
const quiet = 3 * time.Second

// frame measures: an idle window (or the last one), then run, which starts
// the load, waits until it is steady and returns a function that measures
// the window (of length window) and stops the load; then an idle window
// after. When run fails, so does frame, without the window after.
func (m *meter) frame(ctx context.Context, tb testing.TB, s settings, window time.Duration, run func() (measure func() usage, err error)) (framed, error) {
	tb.Helper()

	f := framed{before: m.baseline(ctx, tb, s.baseline), secs: window.Seconds()}
	m.busy()

	measure, err := run()
	if err != nil {
		return f, err
	}

	f.load = measure()
	time.Sleep(quiet)
	f.after = m.baseline(ctx, tb, s.baseline)

	return f, nil
}
