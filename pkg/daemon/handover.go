package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"go.uber.org/zap"

	"golang.org/x/sys/unix"
)

// A group is this daemon's member of a SO_REUSEPORT group: the listening
// sockets on one address and port, this copy's and those of any other
// copy (the old and the new pod during a DaemonSet update).
//
// Left alone, the kernel spreads new connections over the members by a
// hash of the client's address and port. That is no good for a hand-over:
// closing a listener resets the connections in its accept queue and those
// whose handshake is under way (unless net.ipv4.tcp_migrate_req=1, which
// a pod cannot set), so the old copy must stop getting new connections
// before it closes. A classic BPF program attached to the group picks the
// member instead (SO_ATTACH_REUSEPORT_CBPF, no privilege needed); it
// returns an index into the group, and here it is always a constant: "the
// member at index k". Indexes are in the order the members joined; when
// one leaves, the last member takes its index. So a member that joined
// when n were there, itself included, is at n-1 until a member before it
// leaves.
//
// The rule: a copy that is ready (an upstream is usable; what /readyz
// answers) takes the group's new connections, by attaching "index k" with
// its own k. The old copy then gets none, and when it is told to stop its
// accept queue is empty. A copy left alone takes index 0 again ("settle"),
// so that the next copy to join does not get connections before it is
// ready. The health listener is taken at once when bound: kubelet's
// probes must reach the copy whose pod they are about, the newest.
//
// With more than two members at once (not a maxSurge 1 update) an index
// may be stale; the program then picks another live member, never a
// closed one, or an index past the end, when the kernel falls back to the
// hash.
type group struct {
	addr   netip.AddrPort
	fd     int // a duplicate of the listening socket; -1 when released
	joined int // members when this one joined, itself included
	index  int // this member's index, as far as known; -1 before taking over
}

// join makes ln's socket a group member the daemon can steer. The group
// keeps a duplicate of the descriptor until release.
func join(ln *net.TCPListener) (*group, error) {
	ap := ln.Addr().(*net.TCPAddr).AddrPort() //nolint:forcetypeassert // a TCPListener's
	g := &group{addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), fd: -1, index: -1}

	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listener %s: %w", g.addr, err)
	}

	var derr error
	if err := rc.Control(func(fd uintptr) { g.fd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return nil, fmt.Errorf("listener %s: %w", g.addr, errors.Join(err, derr))
	}

	if g.joined, err = listeners(g.addr); err != nil {
		g.release()

		return nil, err
	}

	return g, nil
}

// takeOver sends the group's new connections to this member and returns
// its index.
func (g *group) takeOver() (int, error) {
	n, err := listeners(g.addr)
	if err != nil {
		return -1, err
	}

	k := min(g.joined, n) - 1
	if err := g.steer(k); err != nil {
		return -1, err
	}

	g.index = k

	return k, nil
}

// settle takes index 0 back once this member is alone, and reports
// whether it did.
func (g *group) settle() (bool, error) {
	if g.index <= 0 || g.fd < 0 {
		return false, nil
	}

	n, err := listeners(g.addr)
	if err != nil || n != 1 {
		return false, err
	}

	if err := g.steer(0); err != nil {
		return false, err
	}

	g.index = 0

	return true, nil
}

// steer attaches the program "pick the member at index k" to the group.
func (g *group) steer(k int) error {
	if g.fd < 0 {
		return errors.New("released")
	}

	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: uint32(k)}} //nolint:gosec // k is a small index
	if err := unix.SetsockoptSockFprog(g.fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &unix.SockFprog{Len: 1, Filter: &prog[0]}); err != nil {
		return fmt.Errorf("SO_ATTACH_REUSEPORT_CBPF on %s: %w", g.addr, err)
	}

	return nil
}

// release closes the duplicate. It must come before the listener is
// closed: a duplicate left open would keep the socket in the group,
// queueing connections nobody accepts.
func (g *group) release() {
	if g.fd >= 0 {
		_ = unix.Close(g.fd)
		g.fd = -1
	}
}

// listeners counts the TCP sockets listening on exactly ap in this network
// namespace, by a sock_diag dump of listening sockets (no privilege
// needed; the kernel filters by state, so the reply is small however many
// connections the node has). All of them are in one SO_REUSEPORT group:
// the kernel refuses a second bind of the address otherwise.
func listeners(ap netip.AddrPort) (int, error) {
	socks, err := listening(ap.Addr().Is4())
	if err != nil {
		return 0, err
	}

	n := 0

	for _, s := range socks {
		if s.addr == ap {
			n++
		}
	}

	return n, nil
}

// listenSock is one listening socket from sock_diag: its address and its
// accept queue length.
type listenSock struct {
	addr   netip.AddrPort
	queued uint32
}

// inet_diag_req_v2 and inet_diag_msg (linux/inet_diag.h); x/sys/unix has
// the constants but not the structures.
type inetDiagSockID struct {
	SPort, DPort [2]byte
	Src, Dst     [16]byte
	If           uint32
	Cookie       [2]uint32
}

type inetDiagReqV2 struct {
	Family, Protocol, Ext, Pad uint8
	States                     uint32
	ID                         inetDiagSockID
}

type inetDiagMsg struct {
	Family, State, Timer, Retrans uint8
	ID                            inetDiagSockID
	Expires, RQueue, WQueue, UID  uint32
	Inode                         uint32
}

const tcpListen = 10 // TCP_LISTEN in the kernel's state numbering

// listening dumps the listening TCP sockets of one address family.
func listening(v4 bool) ([]listenSock, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)

	family := uint8(unix.AF_INET6)
	if v4 {
		family = unix.AF_INET
	}

	req := inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: 1 << tcpListen}
	hdr := unix.NlMsghdr{
		Len:   uint32(unix.SizeofNlMsghdr + binary.Size(req)), //nolint:gosec // a few dozen bytes
		Type:  unix.SOCK_DIAG_BY_FAMILY,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP,
		Seq:   1,
	}

	var buf bytes.Buffer

	_ = binary.Write(&buf, binary.NativeEndian, hdr)
	_ = binary.Write(&buf, binary.NativeEndian, req)

	if err := unix.Sendto(fd, buf.Bytes(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}

	return readDump(fd)
}

// maxDumpParts bounds the replies read from one dump; a node has tens to
// hundreds of listening sockets, a few per reply part.
const maxDumpParts = 10000

func readDump(fd int) ([]listenSock, error) {
	var out []listenSock

	rb := make([]byte, 64<<10)

	for range maxDumpParts {
		n, _, err := unix.Recvfrom(fd, rb, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}

		msgs, err := syscall.ParseNetlinkMessage(rb[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}

		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: %w", netlinkError(m.Data))
			}

			if s, ok := parseDiag(m.Data); ok {
				out = append(out, s)
			}
		}
	}

	return nil, errors.New("sock_diag: dump did not end")
}

func netlinkError(data []byte) error {
	if len(data) < 4 {
		return errors.New("truncated error")
	}

	if errno := -int32(binary.NativeEndian.Uint32(data)); errno != 0 { //nolint:gosec // an errno
		return unix.Errno(errno)
	}

	return nil
}

func parseDiag(data []byte) (listenSock, bool) {
	var m inetDiagMsg
	if err := binary.Read(bytes.NewReader(data), binary.NativeEndian, &m); err != nil {
		return listenSock{}, false
	}

	port := binary.BigEndian.Uint16(m.ID.SPort[:])

	var a netip.Addr

	switch m.Family {
	case unix.AF_INET:
		a = netip.AddrFrom4([4]byte(m.ID.Src[:4]))
	case unix.AF_INET6:
		a = netip.AddrFrom16(m.ID.Src).Unmap()
	default:
		return listenSock{}, false
	}

	return listenSock{addr: netip.AddrPortFrom(a, port), queued: m.RQueue}, true
}

// takeOver sends new connections to this copy's proxy listeners, once:
// it is ready (see group). Called by /readyz before it answers, so that a
// pod is Ready, and its old copy told to stop, only after it took over.
func (d *Daemon) takeOver() {
	d.mu.Lock()
	defer d.mu.Unlock()

	if d.takenOver {
		return
	}

	d.takenOver = true

	for _, g := range d.groups {
		k, err := g.takeOver()
		if err != nil {
			d.log.Warn("cannot take the port's new connections over; an update falls back to the kernel's hash",
				zap.Stringer("listen", g.addr), zap.Error(err))

			continue
		}

		if g.joined > 1 {
			d.log.Info("ready: new connections come to this copy", zap.Stringer("listen", g.addr), zap.Int("index", k))
		}
	}
}

// settleGroups takes index 0 back in groups this copy is now alone in.
func (d *Daemon) settleGroups() {
	d.mu.Lock()
	defer d.mu.Unlock()

	for _, g := range d.groups {
		if ok, err := g.settle(); err != nil {
			d.log.Debug("reuseport group", zap.Stringer("listen", g.addr), zap.Error(err))
		} else if ok {
			d.log.Info("the other copy has gone; this one is alone on the port", zap.Stringer("listen", g.addr))
		}
	}
}

// releaseGroups lets the listeners go: from now on they close with the
// engines.
func (d *Daemon) releaseGroups() {
	d.mu.Lock()
	defer d.mu.Unlock()

	for _, g := range d.groups {
		g.release()
	}
}
