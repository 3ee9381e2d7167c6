// Command sdsmoke is a throwaway socket-activated daemon used only by
// test/e2e/smoke.sh to prove the e2e harness works. It uses the standard
// library only: it takes the listening socket systemd passes as fd 3
// (LISTEN_PID/LISTEN_FDS), sends READY=1 and STATUS= to NOTIFY_SOCKET with a
// raw unixgram write, and answers every connection with "hello\n".
//
// It lives under testdata/ so `go build ./...` and `go test ./...` of the main
// module skip it; smoke.sh builds it in a throwaway module of its own.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

const listenFdsStart = 3

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sdsmoke:", err)
		os.Exit(1)
	}
}

func run() error {
	ln, err := activationListener()
	if err != nil {
		return err
	}

	if err := notify("READY=1\nSTATUS=serving on " + ln.Addr().String()); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	go func() {
		<-stop
		_ = notify("STOPPING=1")
		// The socket belongs to systemd: closing our copy does not unbind it.
		_ = ln.Close()
	}()

	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}

			return fmt.Errorf("accept: %w", err)
		}

		_, _ = conn.Write([]byte("hello\n"))
		_ = conn.Close()
	}
}

// activationListener returns the first socket passed by systemd.
func activationListener() (net.Listener, error) {
	pid, err := strconv.Atoi(os.Getenv("LISTEN_PID"))
	if err != nil || pid != os.Getpid() {
		return nil, fmt.Errorf("not socket-activated (LISTEN_PID=%q, pid %d)", os.Getenv("LISTEN_PID"), os.Getpid())
	}

	nfds, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || nfds < 1 {
		return nil, fmt.Errorf("no sockets passed (LISTEN_FDS=%q)", os.Getenv("LISTEN_FDS"))
	}

	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")

	syscall.CloseOnExec(listenFdsStart)

	f := os.NewFile(listenFdsStart, "LISTEN_FD_3")
	defer f.Close()

	ln, err := net.FileListener(f) // dups the fd
	if err != nil {
		return nil, fmt.Errorf("fd 3: %w", err)
	}

	return ln, nil
}

// notify sends state to NOTIFY_SOCKET; a missing socket is not an error.
func notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}

	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract namespace
	}

	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer syscall.Close(fd)

	if err := syscall.Sendto(fd, []byte(state), 0, &syscall.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("sendto %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}

	return nil
}
