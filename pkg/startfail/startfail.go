// Package startfail slows down a service that keeps failing to start.
//
// A node depends on the proxy, so its unit restarts it forever
// (Restart=always, no start limit). A configuration error would then
// restart it every RestartSec (1 s), flooding the journal. systemd 254 and
// later can space restarts out (RestartSteps=, RestartMaxDelaySec=), but
// 252 (Debian 12, RHEL 9) ignores those keys. So the daemon does it
// itself: consecutive failed starts are counted in the state directory,
// and a failed start waits 1 s, 2 s, 4 s ... up to 60 s before it exits,
// saying why in STATUS= meanwhile. A successful start resets the count.
package startfail

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// File holds the count, in the state directory.
const File = "start-failures"

// Max is the longest wait.
const Max = 60 * time.Second

// Counter counts consecutive failed starts in a directory.
type Counter struct {
	path string // "" when there is no state directory
}

// Open returns the counter kept in dir; with dir "" nothing is kept.
func Open(dir string) Counter {
	if dir == "" {
		return Counter{}
	}

	return Counter{path: filepath.Join(dir, File)}
}

// Failed records a failed start and returns how many happened in a row
// and how long to wait before exiting: 2^(n-1) s, at most Max; 0 and 0
// without a state directory. A counter that cannot be written still
// gives the delay.
func (c Counter) Failed() (int, time.Duration) {
	if c.path == "" {
		return 0, 0
	}

	n := 1

	if data, err := os.ReadFile(c.path); err == nil {
		if prev, err := strconv.Atoi(string(bytes.TrimSpace(data))); err == nil && prev >= 0 && prev < 1<<30 {
			n = prev + 1
		} else if err == nil || errors.Is(err, strconv.ErrRange) {
			n = 1 << 30
		}
	}

	_ = os.WriteFile(c.path, []byte(strconv.Itoa(n)+"\n"), 0o600)

	delay := Max
	if n <= 7 {
		delay = min(time.Duration(1<<(n-1))*time.Second, Max)
	}

	return n, delay
}

// Started records a successful start: the next failure waits 1 s again.
func (c Counter) Started() {
	if c.path == "" {
		return
	}

	_ = os.Remove(c.path)
}
