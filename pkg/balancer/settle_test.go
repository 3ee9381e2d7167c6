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

	b := startOn(t, listen(t), st, true, up.addr())

	late := map[string][3]int{
		"SO_KEEPALIVE":     {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE":     {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 17},
		"TCP_KEEPINTVL":    {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 17},
		"TCP_USER_TIMEOUT": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, 9000},
	}

	greeted(t, b)

	withSession(t, b, func(l *loop, s *session) {
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

		if next := l.settleDue(s.born.Add(settleAfter)); next != -1 {
			t.Errorf("settleDue left a wake in %d ms with every session settled", next)
		}

		for name, o := range late {
			if got := getOpt(t, s.up.fd, o[0], o[1]); got != o[2] {
				t.Errorf("upstream %s = %d after settling, want %d", name, got, o[2])
			}
		}
	})

	// A second connection settles by the loop's schedule alone.
	greeted(t, b)

	var fd int

	withSession(t, b, func(_ *loop, s *session) {
		if !s.settled {
			fd = s.up.fd
		}
	})

	waitFor(t, "the second connection to settle", func() bool {
		return getOpt(t, fd, unix.SOL_SOCKET, unix.SO_KEEPALIVE) == 1
	})
}

// withSession runs f on the session that is not settled yet, or on the
// only one, with its loop locked.
func withSession(t *testing.T, b *rig, f func(*loop, *session)) {
	t.Helper()

	for _, l := range b.loops {
		l.mu.Lock()

		for s := range l.sessions {
			if !s.settled || len(l.sessions) == 1 {
				f(l, s)
				l.mu.Unlock()

				return
			}
		}

		l.mu.Unlock()
	}

	t.Fatal("no session")
}

func getOpt(t *testing.T, fd, level, name int) int {
	t.Helper()

	v, err := unix.GetsockoptInt(fd, level, name)
	if err != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, name, err)
	}

	return v
}
