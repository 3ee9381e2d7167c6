package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// bindOptions say how the daemon binds a listener of its own. Sockets
// passed by systemd are used as they are.
type bindOptions struct {
	// reusePort sets SO_REUSEPORT: a newer copy of the daemon (the new pod
	// of a DaemonSet update) binds the same address and port while this one
	// still serves. The kernel admits to the group only sockets of the same
	// user, so another user's process cannot join it.
	reusePort bool
	// freeBind sets IP_FREEBIND: the address may not be on the node yet
	// (the link-local interface is made by another unit or container), and
	// the order they start in must not matter.
	freeBind bool
}

// ErrAddressInUse means another process holds the address without
// SO_REUSEPORT, or as another user.
var ErrAddressInUse = errors.New("address in use")

// bind listens on addr:port. The socket is plain TCP, as systemd passes
// them: Go makes MPTCP listeners by default, and those refuse the reuseport
// BPF program the hand-over attaches (EOPNOTSUPP).
func bind(addr string, port int, o bindOptions) (*net.TCPListener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error

		err := c.Control(func(fd uintptr) {
			if o.reusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}

			if serr == nil && o.freeBind {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			}
		})

		return errors.Join(err, serr)
	}}
	lc.SetMultipathTCP(false)

	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			hint := "another process holds it"
			if o.reusePort {
				hint += " without SO_REUSEPORT or as another user (a DaemonSet update that changes the pod's user cannot overlap: update with maxSurge 0 once)"
			}

			return nil, fmt.Errorf("%w: %w; %s", ErrAddressInUse, err, hint)
		}

		return nil, err //nolint:wrapcheck // wrapped by the caller, which names the listener
	}

	return ln.(*net.TCPListener), nil //nolint:forcetypeassert // "tcp" always gives one
}
