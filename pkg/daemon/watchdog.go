package daemon

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// selfWatchdog is the watchdog for when no service manager keeps one (a
// container, a static pod): when alive has failed for timeout without a
// break, it calls onStall, which ends the process so that the runtime
// restarts it, as systemd does with WatchdogSec. It checks four times per
// timeout, so it fires between timeout and 1.25 × timeout after the stall
// began.
//
// It replaces a liveness probe on the health port, which any process on
// the node's network could take and answer (see README, DaemonSet).
func selfWatchdog(ctx context.Context, timeout time.Duration, alive func() error, onStall func(), log *zap.Logger) {
	tick := time.NewTicker(timeout / 4)
	defer tick.Stop()

	var since time.Time // when the current stall began

	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			err := alive()
			// The tick's own time can predate the stall alive just saw
			// (a tick sent before the stall began, read after): measure
			// from when it was seen, so that it never fires early.
			now := time.Now()

			switch {
			case err == nil:
				if !since.IsZero() {
					log.Info("daemon loops healthy again", zap.Duration("stalled_for", now.Sub(since)))
				}

				since = time.Time{}
			case since.IsZero():
				since = now
				log.Error("daemon loop stalled; ending the process if it lasts", zap.Error(err), zap.Duration("timeout", timeout))
			case now.Sub(since) >= timeout:
				log.Error("daemon loop stalled for the whole watchdog timeout; ending the process to be restarted", zap.Error(err))
				onStall()

				return
			}
		}
	}
}
