package kubeharness

import (
	"context"
	"fmt"
	"time"
)

// Poll calls cond every interval until it reports done, returns an error, or
// ctx ends. On timeout the error includes the last reason cond gave, which is
// usually what a failing test needs to print.
func Poll(ctx context.Context, interval time.Duration, cond func(ctx context.Context) (done bool, reason string, err error)) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()

	var reason string

	for {
		done, r, err := cond(ctx)
		if err != nil {
			return err
		}

		if done {
			return nil
		}

		reason = r

		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; last state: %s", ctx.Err(), reason)
		case <-ticker.C:
		}
	}
}
