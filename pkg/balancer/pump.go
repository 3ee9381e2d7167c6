package balancer

import (
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// pump copies src to dst until EOF, holding nothing while src is idle.
// io.Copy between TCP connections would splice through a pipe pair that it
// keeps for the whole call: four extra descriptors per idle connection.
// Here each round waits for src to become readable, asks the kernel how
// many bytes are queued (FIONREAD) and splices exactly those, so the pipe
// goes back to Go's pool between bursts and bulk transfers stay zero-copy.
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
		avail, err := waitReadable(raw)
		if err != nil {
			return total, err
		}

		if avail == 0 {
			// Readable with nothing queued: EOF or an error, which a plain
			// read reports.
			var one [1]byte

			n, err := tsrc.Read(one[:])
			if n > 0 {
				if _, werr := tdst.Write(one[:n]); werr != nil {
					return total, werr
				}

				total += int64(n)

				continue
			}

			if errors.Is(err, io.EOF) {
				return total, nil
			}

			return total, err
		}

		n, err := tdst.ReadFrom(&io.LimitedReader{R: tsrc, N: int64(avail)})
		total += n

		if err != nil {
			return total, err
		}
	}
}

// waitReadable blocks in Go's poller until raw's socket is readable, then
// returns how many bytes are queued.
func waitReadable(raw syscall.RawConn) (int, error) {
	var (
		avail    int
		ioctlErr error
	)

	err := raw.Read(func(fd uintptr) bool {
		avail, ioctlErr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if ioctlErr != nil {
			return true
		}

		if avail > 0 {
			return true
		}

		// Nothing queued: either idle (wait) or at EOF. A zero-length
		// peek tells them apart without consuming anything.
		var b [1]byte

		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)

		return n == 0 && err == nil || (err != nil && !errors.Is(err, unix.EAGAIN))
	})
	if err != nil {
		return 0, err
	}

	return avail, ioctlErr
}
