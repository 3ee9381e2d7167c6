package balancer

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLateSocketOptions: TCP_NODELAY is on an upstream socket from the
// start; keepalive and TCP_USER_TIMEOUT come when the connection settles,
// by the loop's own schedule. The client's socket has them from the
// listener.
func TestLateSocketOptions(t *testing.T) {
	t.Parallel()

	up := startServer(t, "a")

	st := quiet
	st.KeepAlivePeriod = 17 * time.Second
	st.TCPUserTimeout = 9 * time.Second

	// One loop, so that both connections meet there; nothing settles by
	// itself until the test says so.
	r := build(t, Options{Listener: listen(t), Loops: 1}, st, up.addr())
	l := r.loops[0]
	l.settleAfter = time.Hour
	b := serve(t, r, true)

	late := map[string][3]int{
		"SO_KEEPALIVE":     {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":     {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 17},
		"TCP_KEEPINTVL":    {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 17},
		"TCP_USER_TIMEOUT": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 9000},
	}

	greeted(t, b)

	newest(t, l, func(s *session) {
		if got := getOpt(t, s.up.fd, unix.IPPROTO_TCP, unix.TCP_NODELAY); got != 1 {
			t.Errorf("upstream TCP_NODELAY = %d before settling, want 1", got)
		}

		if got := getOpt(t, s.up.fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 0 {
			t.Errorf("upstream SO_KEEPALIVE = %d before settling, want 0", got)
		}

		for name, o := range late {
			if name == "TCP_USER_TIMEOUT" {
				continue // set per socket on non-loopback listeners only
			}

			if got := getOpt(t, s.client.fd, o[0], o[1]); got != o[2] {
				t.Errorf("client %s = %d, want %d (from the listener)", name, got, o[2])
			}
		}

		if next := l.settleDue(s.born.Add(l.settleAfter)); next != -1 {
			t.Errorf("settleDue left a wake in %d ms with every session settled", next)
		}

		for name, o := range late {
			if got := getOpt(t, s.up.fd, o[0], o[1]); got != o[2] {
				t.Errorf("upstream %s = %d after settling, want %d", name, got, o[2])
			}
		}

		l.settleAfter = 50 * time.Millisecond
	})

	// A second connection settles by the loop's schedule alone.
	greeted(t, b)

	var fd int

	newest(t, l, func(s *session) { fd = s.up.fd })

	waitFor(t, "the second connection to settle", func() bool {
		return getOpt(t, fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE) == 1
	})
}

// newest runs f on l's youngest session with l locked.
func newest(t *testing.T, l *loop, f func(*session)) {
	t.Helper()

	l.mu.Lock()
	defer l.mu.Unlock()

	var young *session

	for s := range l.sessions {
		if young == nil || s.born.After(young.born) {
			young = s
		}
	}

	if young == nil {
		t.Fatal("no session")
	}

	f(young)
}

func getOpt(t *testing.T, fd, level, name int) int {
	t.Helper()

	v, err := unix.GetsockoptInt(fd, level, name)
	if err != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, name, err)
	}

	return v
}
