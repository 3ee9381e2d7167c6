package balancer

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func sockaddrOf(ap netip.AddrPort) (int, unix.Sockaddr) {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return unix.AF_INET, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}

	return unix.AF_INET6, &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}

// sockopt is one integer socket option.
type sockopt struct{ level, name, value int }

// socketOptions are set on the listener, whose accepted sockets inherit
// them on Linux, and on every upstream socket. Keepalive and
// TCP_USER_TIMEOUT make a peer that vanished without a FIN release the
// other side; TCP_NODELAY keeps small requests from waiting on Nagle.
func socketOptions(s *Settings) []sockopt {
	opts := []sockopt{{unix.IPPROTO_TCP, unix.TCP_NODELAY, 1}}

	if s.KeepAlivePeriod > 0 {
		secs := max(int(s.KeepAlivePeriod/time.Second), 1)
		opts = append(opts,
			sockopt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
			sockopt{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, secs},
			sockopt{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, secs})
	} else {
		opts = append(opts, sockopt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0})
	}

	if s.TCPUserTimeout > 0 {
		opts = append(opts, sockopt{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.TCPUserTimeout / time.Millisecond)})
	}

	return opts
}

// upstreamOpts are the options of upstream sockets: dial at once, late
// when the connection settles (see settleAfter).
type upstreamOpts struct{ dial, late []sockopt }

func upstreamOptions(s *Settings) *upstreamOpts {
	opts := &upstreamOpts{}

	for _, o := range socketOptions(s) {
		switch {
		case o.value == 0:
			// A new socket has every option off: turning one off
			// (keepalive disabled) matters only on the listener, whose
			// options may have been on before a reload.
		case o.name == unix.TCP_NODELAY:
			opts.dial = append(opts.dial, o)
		default:
			opts.late = append(opts.late, o)
		}
	}

	return opts
}

func setOptions(fd int, opts []sockopt) error {
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.name, o.value); err != nil {
			return fmt.Errorf("setsockopt(%d, %d): %w", o.level, o.name, err)
		}
	}

	return nil
}

// tuneListener sets the socket options on the listener, for the sockets
// it will accept, and returns those the listener refused: some kernels
// take TCP_USER_TIMEOUT only on a connected socket, so it is set on each
// accepted one instead.
func tuneListener(fd int, s *Settings) ([]sockopt, error) {
	var left []sockopt

	for _, o := range socketOptions(s) {
		err := unix.SetsockoptInt(fd, o.level, o.name, o.value)

		switch {
		case errors.Is(err, unix.ENOPROTOOPT):
			left = append(left, o)
		case err != nil:
			return nil, fmt.Errorf("setsockopt(%d, %d): %w", o.level, o.name, err)
		}
	}

	return left, nil
}

// connectRaw starts a non-blocking connect to ap. The socket becomes
// writable when it completes, also when it did at once: epoll reports a
// socket that is ready when it is added.
func connectRaw(ap netip.AddrPort, opts []sockopt) (int, error) {
	family, sa := sockaddrOf(ap)

	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("dial %s: socket: %w", ap, err)
	}

	if err := setOptions(fd, opts); err != nil {
		_ = unix.Close(fd)

		return -1, fmt.Errorf("dial %s: %w", ap, err)
	}

	err = unix.Connect(fd, sa)
	if err == nil || errors.Is(err, unix.EINPROGRESS) || errors.Is(err, unix.EINTR) {
		return fd, nil
	}

	_ = unix.Close(fd)

	return -1, dialError(ap, err)
}

// connectResult reads the outcome of a non-blocking connect.
func connectResult(fd int, ap netip.AddrPort) error {
	errno, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && errno != 0 {
		err = syscall.Errno(errno)
	}

	if err != nil {
		return dialError(ap, err)
	}

	return nil
}

func dialError(ap netip.AddrPort, err error) error {
	return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(ap), Err: err}
}
