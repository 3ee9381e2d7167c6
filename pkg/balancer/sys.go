package balancer

import "golang.org/x/sys/unix"

// sys is the syscalls the relay loops move bytes with. Tests inject what
// the kernel may do at any time (EINTR, short writes and splices, no
// descriptor for a pipe) through it. Short reads are not injected: a short
// read of a TCP socket means it is empty, which the edge-triggered loops
// rely on.
type sys struct {
	read   func(fd int, p []byte) (int, error)
	write  func(fd int, p []byte) (int, error)
	splice func(rfd, wfd, n int) (int64, error)
	pipe   func(fds []int) error
}

var kernel = &sys{
	read:  unix.Read,
	write: unix.Write,
	splice: func(rfd, wfd, n int) (int64, error) {
		return unix.Splice(rfd, nil, wfd, nil, n, unix.SPLICE_F_NONBLOCK|unix.SPLICE_F_MOVE)
	},
	pipe: func(fds []int) error { return unix.Pipe2(fds, unix.O_NONBLOCK|unix.O_CLOEXEC) },
}
