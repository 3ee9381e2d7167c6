package balancer

import (
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// pump copies src to dst until EOF, holding nothing while src is idle.
//
// io.Copy between TCP connections would splice through a pipe pair that it
// keeps for the whole call: four extra descriptors per idle connection.
// Here each round waits in Go's poller with no buffer, reads what arrived
// into a pooled buffer, and writes it: one read and one write per small
// message, as a C proxy does. When the read fills the buffer, a bulk
// transfer is under way and the rest of what is queued (FIONREAD) is
// spliced, zero-copy, through a pipe that goes back to Go's pool at once.
func pump(dst, src net.Conn) (int64, error) {
	tsrc, ok1 := src.(*net.TCPConn)
	tdst, ok2 := dst.(*net.TCPConn)

	if !ok1 || !ok2 {
		return io.Copy(dst, src)
	}

	raw, err := tsrc.SyscallConn()
	if err != nil {
		return io.Copy(dst, src)
	}

	var total int64

	for {
		buf, n, err := readRaw(raw)
		if n > 0 {
			_, werr := tdst.Write((*buf)[:n])
			bufPool.Put(buf)

			if werr != nil {
				return total, werr
			}

			total += int64(n)
		}

		switch {
		case err != nil:
			return total, err
		case n == 0:
			return total, nil // EOF
		case n == len(*buf):
			m, err := spliceQueued(raw, tdst, tsrc)
			total += m

			if err != nil {
				return total, err
			}
		}
	}
}

// readRaw waits until raw is readable, holding no buffer, then reads what is
// there into a pooled buffer. n == 0 with a nil error is EOF.
func readRaw(raw syscall.RawConn) (*[]byte, int, error) {
	var (
		buf  *[]byte
		n    int
		rerr error
	)

	err := raw.Read(func(fd uintptr) bool {
		b := bufPool.Get().(*[]byte)

		for {
			n, rerr = unix.Read(int(fd), *b)
			if !errors.Is(rerr, unix.EINTR) {
				break
			}
		}

		if errors.Is(rerr, unix.EAGAIN) {
			bufPool.Put(b)

			return false // wait for readability
		}

		buf = b

		return true
	})

	if err == nil {
		err = rerr
	}

	if n < 0 {
		n = 0
	}

	return buf, n, err
}

// spliceQueued splices what is queued on src to dst.
func spliceQueued(raw syscall.RawConn, dst, src *net.TCPConn) (int64, error) {
	var (
		avail    int
		ioctlErr error
	)

	if err := raw.Control(func(fd uintptr) { avail, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil {
		return 0, err
	}

	if ioctlErr != nil || avail == 0 {
		return 0, ioctlErr
	}

	return dst.ReadFrom(&io.LimitedReader{R: src, N: int64(avail)})
}
