package discovery

import (
	"context"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// logSink records what the watcher logs, so tests wait for what it did
// rather than for time to pass.
type logSink struct {
	mu      sync.Mutex
	entries []zapcore.Entry
	wake    chan struct{}
}

func newLogger(t *testing.T) (*zap.Logger, *logSink) {
	t.Helper()

	s := &logSink{wake: make(chan struct{})}
	hook := func(e zapcore.Entry) error {
		s.mu.Lock()
		s.entries = append(s.entries, e)
		close(s.wake)
		s.wake = make(chan struct{})
		s.mu.Unlock()

		return nil
	}

	return zaptest.NewLogger(t, zaptest.Level(zap.DebugLevel), zaptest.WrapOptions(zap.Hooks(hook))), s
}

// count is how many entries at level contain msg.
func (s *logSink) count(level zapcore.Level, msg string) int {
	s.mu.Lock()
	defer s.mu.Unlock()

	n := 0

	for _, e := range s.entries {
		if e.Level == level && strings.Contains(e.Message, msg) {
			n++
		}
	}

	return n
}

// wait blocks until n entries at level contain msg.
func (s *logSink) wait(t *testing.T, level zapcore.Level, msg string, n int) {
	t.Helper()

	timeout := time.After(30 * time.Second)

	for {
		s.mu.Lock()
		wake := s.wake
		s.mu.Unlock()

		if s.count(level, msg) >= n {
			return
		}

		select {
		case <-wake:
		case <-timeout:
			t.Fatalf("no %d× %s %q logged within 30 s", n, level, msg)
		}
	}
}

// runWatcher starts a watcher on client; its sets arrive on the channel.
// It is stopped, and Run has returned, before the test's other cleanups.
func runWatcher(t *testing.T, client *Client) (*Watcher, <-chan []string, *logSink) {
	t.Helper()

	log, sink := newLogger(t)
	changes := make(chan []string, 100)
	w := NewWatcher(client, log, Limits{}, func(eps []string) { changes <- eps })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})

	go func() { defer close(done); w.Run(ctx) }()

	t.Cleanup(func() { cancel(); <-done })

	return w, changes, sink
}

func nextSet(t *testing.T, changes <-chan []string, want ...string) {
	t.Helper()

	select {
	case got := <-changes:
		if !slices.Equal(got, want) {
			t.Fatalf("watcher reported %v, want %v", got, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no set reported within 30 s, want %v", want)
	}
}

func ipv4Slice(eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return slice(discoveryv1.AddressTypeIPv4, https(6443), eps...)
}

// A slice that cannot be used, one with no ready endpoint, and a deleted
// slice each leave the last good set in place; the next good slice is
// taken. (watcher.go's "ignoring" branch and the delete handler.)
func TestWatcherKeepsTheLastGoodSet(t *testing.T) {
	t.Parallel()

	yes, no := ptr.To(true), ptr.To(false)
	api := newFakeAPI(t)
	api.set(ipv4Slice(ep(yes, nil, "10.0.0.2"), ep(yes, nil, "10.0.0.1")))

	w, changes, logs := runWatcher(t, api.client(t))
	good := []string{"10.0.0.1:6443", "10.0.0.2:6443"}
	nextSet(t, changes, good...)

	// Which a real API server's validation would refuse to store.
	api.set(ipv4Slice(ep(yes, nil, "fd00::1")))
	logs.wait(t, zap.WarnLevel, "ignoring the kubernetes EndpointSlice", 1)

	api.set(ipv4Slice(ep(no, nil, "10.0.0.1"), ep(yes, yes, "10.0.0.2")))
	logs.wait(t, zap.WarnLevel, "ignoring the kubernetes EndpointSlice", 2)

	api.set(slice(discoveryv1.AddressTypeIPv4, nil, ep(yes, nil, "10.0.0.9")))
	logs.wait(t, zap.WarnLevel, "ignoring the kubernetes EndpointSlice", 3)

	api.set(nil)
	logs.wait(t, zap.WarnLevel, "the kubernetes EndpointSlice was deleted; keeping the last known set", 1)

	if s := w.State(); !slices.Equal(s.Endpoints, good) || s.Phase != Watching || s.Events != 4 {
		t.Fatalf("after bad, empty, portless and deleted slices: state %+v, want endpoints %v, watching, 4 events", s, good)
	}

	// Recreated by the API server: taken, and it is the first change since
	// the good set (the channel delivers in order).
	api.set(ipv4Slice(ep(yes, nil, "10.0.0.3")))
	nextSet(t, changes, "10.0.0.3:6443")

	// The same set in another slice is no change: the next change
	// reported is the one after it.
	api.set(ipv4Slice(ep(yes, nil, "10.0.0.3"), ep(nil, nil, "10.0.0.3")))
	api.set(ipv4Slice(ep(yes, nil, "10.0.0.4")))
	nextSet(t, changes, "10.0.0.4:6443")

	if s := w.State(); s.Events != 7 {
		t.Fatalf("state %+v, want 7 events", s)
	}
}

// Each kind of failure gets its phase, one log line at its level however
// often it repeats, and the static set stays (no set is reported); when
// the API answers again the watch recovers and reports the set.
func TestWatcherPhases(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		code  int
		phase Phase
		level zapcore.Level
		msg   string
	}{
		{http.StatusForbidden, Forbidden, zap.ErrorLevel, "discovery forbidden"},
		{http.StatusUnauthorized, Unauthorized, zap.ErrorLevel, "discovery unauthorized"},
		{http.StatusInternalServerError, Unreachable, zap.WarnLevel, "discovery cannot reach the API"},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			t.Parallel()

			api := newFakeAPI(t)
			api.set(ipv4Slice(ep(nil, nil, "10.0.0.1")))
			api.failWith(tc.code)

			w, changes, logs := runWatcher(t, api.client(t))

			logs.wait(t, tc.level, tc.msg, 1)
			logs.wait(t, zap.DebugLevel, "discovery still failing", 1) // a retry, same trouble

			s := w.State()
			if s.Phase != tc.phase || s.Errors[tc.phase] < 2 || !strings.Contains(s.LastError, "(fake API server)") || s.Endpoints != nil {
				t.Fatalf("state %+v, want phase %s, >= 2 errors, the API's message, no endpoints", s, tc.phase)
			}

			if n := logs.count(tc.level, tc.msg); n != 1 {
				t.Fatalf("%q logged %d times, want once", tc.msg, n)
			}

			if len(changes) != 0 {
				t.Fatalf("a set was reported while the API failed: %v", <-changes)
			}

			api.failWith(0)
			nextSet(t, changes, "10.0.0.1:6443")

			if s := w.State(); s.Phase != Watching || s.LastError != "" || s.LastSync.IsZero() {
				t.Fatalf("after recovery: state %+v, want watching, no error, a last sync", s)
			}
		})
	}
}

// Nothing listening at all is "unreachable" too.
func TestWatcherUnreachable(t *testing.T) {
	t.Parallel()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	addr := ln.Addr().String()
	ln.Close() // refused from now on

	client, err := NewClient(&rest.Config{Host: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}

	w, _, logs := runWatcher(t, client)
	logs.wait(t, zap.WarnLevel, "discovery cannot reach the API", 1)

	if s := w.State(); s.Phase != Unreachable || !strings.Contains(s.LastError, "connection refused") {
		t.Fatalf("state %+v, want unreachable with connection refused", s)
	}
}

// A watch the API server cannot resume (410 Gone) is routine: the watcher
// lists again, stays "watching", logs no warning, and sees later changes.
func TestWatcherRelistsAfterGone(t *testing.T) {
	t.Parallel()

	api := newFakeAPI(t)
	api.set(ipv4Slice(ep(nil, nil, "10.0.0.1")))

	w, changes, logs := runWatcher(t, api.client(t))
	nextSet(t, changes, "10.0.0.1:6443")

	lists := w.State().Lists

	api.drainFetches()
	api.endWatches(http.StatusGone)
	api.waitFetch(t)

	api.set(ipv4Slice(ep(nil, nil, "10.0.0.2")))
	nextSet(t, changes, "10.0.0.2:6443")

	s := w.State()
	if s.Lists <= lists {
		t.Fatalf("lists: %d -> %d; want a new full fetch after 410", lists, s.Lists)
	}

	if s.Phase != Watching || len(s.Errors) != 0 || logs.count(zap.WarnLevel, "") != 0 {
		t.Fatalf("state %+v, %d warnings; want watching with no error counted or warned", s, logs.count(zap.WarnLevel, ""))
	}

	// Every watch, the first and the one after the relist, asks to last 30
	// to 60 minutes, not client-go's 5 to 10: each renewal is a request
	// from every node of the fleet (docs/fleet.md).
	api.mu.Lock()
	lasting := slices.Clone(api.lasting)
	api.mu.Unlock()

	if len(lasting) < 2 {
		t.Fatalf("%d watches asked, want 2 or more", len(lasting))
	}

	for _, v := range lasting {
		if s, err := strconv.Atoi(v); err != nil || s < 30*60 || s > 60*60 {
			t.Fatalf("a watch asked timeoutSeconds=%q, want 1800 to 3600 (all: %v)", v, lasting)
		}
	}
}

// Through the proxy, "the API is down" is not a refused connection: the
// proxy accepts, finds no upstream and closes, so each request ends in EOF.
// That is an unreachable API, at boot and after a time of watching, not the
// routine end of a watch; and the watch recovers when the API is back.
func TestWatcherUnreachableThroughTheProxy(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name     string
		watching bool // the API answered before it went away
	}{
		{"at boot", false},
		{"after watching", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			api := newFakeAPI(t)
			api.set(ipv4Slice(ep(nil, nil, "10.0.0.1")))

			if !tc.watching {
				api.hangUpOnAll()
			}

			w, changes, logs := runWatcher(t, api.client(t))

			if tc.watching {
				nextSet(t, changes, "10.0.0.1:6443")
				api.hangUpOnAll()
			}

			logs.wait(t, zap.WarnLevel, "discovery cannot reach the API", 1)

			if s := w.State(); s.Phase != Unreachable || !strings.Contains(s.LastError, "EOF") {
				t.Fatalf("state %+v, want unreachable with EOF", s)
			}
		})
	}
}
