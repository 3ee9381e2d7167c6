package check

// Found by an adversarial review; each test here failed before its fix.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"go.uber.org/zap/zaptest"
	clocktesting "k8s.io/utils/clock/testing"
)

// The first round of checks runs inside the schedule's goroutine, which
// waits for every first check before its first turn (run: first.Wait()).
// A first check may take health_timeout, which validation allows up to
// health_interval (2 min); Alive calls the schedule stuck after 3 heartbeats
// (15 s). With a blackholed upstream at start and health_timeout over 15 s,
// /healthz fails and the watchdog pings stop (WatchdogSec=10s): systemd
// restarts a working proxy, over and over, for as long as that upstream
// stays blackholed. An upstream added by discovery during that round is not
// checked until it ends either.
func TestReviewAliveDuringAFirstCheckWithinItsTimeout(t *testing.T) {
	t.Parallel()

	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	h := newHeld()
	p := New(newSet(t, 1), Settings{Timeout: time.Minute, Check: h}, zaptest.NewLogger(t), clk)
	p.Start()
	t.Cleanup(func() {
		h.release <- nil
		p.Stop()
	})

	<-h.started // a first check, well within its 1 min timeout

	// Each heartbeat, the schedule turns and sets its next timer: a turn is
	// awaited as the timer it leaves on the clock.
	for range 4 {
		turned(t, clk)
		clk.Step(heartbeat)
	}

	turned(t, clk)

	if err := p.Alive(); err != nil {
		t.Fatalf("the schedule waits for a check within its timeout, yet Alive says: %v", err)
	}
}

// noPort fails as a TCP check does when this host has no local port left
// for the upstream's address (see balancer's TestReviewNoLocalPortIsNotEvidence).
type noPort struct{}

func (noPort) Check(_ context.Context, addr string) error {
	return fmt.Errorf("dial tcp %s: connect: %w", addr, unix.EADDRNOTAVAIL)
}

// A check that could not even be made for want of a local port says
// nothing of the upstream, like one that found no descriptor
// (localShortage): recorded as a failure, it takes a working API server out
// (fall 1, the default) and, after a second one, resets its clients.
func TestReviewNoLocalPortCheckIsSkipped(t *testing.T) {
	t.Parallel()

	set := newSet(t, 1)
	p := New(set, Settings{Timeout: time.Minute, Check: noPort{}}, zaptest.NewLogger(t), nil)
	p.Start()
	t.Cleanup(p.Stop)

	if err := p.WaitFirstRound(t.Context()); err != nil {
		t.Fatal(err)
	}

	if st := set.Status()[0]; !st.Healthy || st.LastError != "" {
		t.Fatalf("a check that found no local port was recorded against the upstream: %+v", st)
	}
}

// turned waits until the schedule has a timer on clk: it has turned.
func turned(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()

	deadline := time.Now().Add(5 * time.Second)
	for !clk.HasWaiters() {
		if time.Now().After(deadline) {
			t.Fatal("the schedule does not turn while a first check runs")
		}

		time.Sleep(time.Millisecond)
	}
}
