package daemon

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// Without a service manager's watchdog, the daemon watches itself: loops
// that stay stalled for the whole timeout end the process (onStall), so
// that the container runtime restarts it; a stall that ends in time does
// not.
func TestSelfWatchdog(t *testing.T) {
	t.Parallel()

	const timeout = 200 * time.Millisecond

	var stalled atomic.Bool

	alive := func() error {
		if stalled.Load() {
			return errors.New("loop stalled")
		}

		return nil
	}

	fired := make(chan time.Time, 1)
	ctx, cancel := context.WithCancel(context.Background())

	defer cancel()

	go selfWatchdog(ctx, timeout, alive, func() { fired <- time.Now() }, zaptest.NewLogger(t))

	// A short stall, well under the timeout: no restart.
	stalled.Store(true)
	time.Sleep(timeout / 4)
	stalled.Store(false)

	select {
	case <-fired:
		t.Fatal("a stall shorter than the timeout ended the process")
	case <-time.After(2 * timeout):
	}

	// A stall that lasts.
	start := time.Now()
	stalled.Store(true)

	select {
	case at := <-fired:
		if at.Sub(start) < timeout {
			t.Fatalf("fired after %s, before the timeout of %s", at.Sub(start), timeout)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a lasting stall did not end the process")
	}
}
