package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// greeter is a real upstream that writes its name to every connection and
// then echoes.
func greeter(t *testing.T, addr, name string) string {
	t.Helper()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { ln.Close() })

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, name+"\n")
				// No splice: a pipe per connection would eat the test's fds.
				_, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
			}()
		}
	}()

	return ln.Addr().String()
}

// syncBuffer collects a child's stderr while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.b.String()
}

// notifyListener is a NOTIFY_SOCKET, as systemd provides.
func notifyListener(t *testing.T) (string, <-chan string) {
	t.Helper()

	path := filepath.Join(t.TempDir(), "notify")

	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { conn.Close() })

	msgs := make(chan string, 1000)

	go func() {
		buf := make([]byte, 4096)

		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}

			msgs <- string(buf[:n])
		}
	}()

	return path, msgs
}

// expectNotify waits for a message starting with prefix, skipping watchdog
// pings and status refreshes, and returns it.
func expectNotify(t *testing.T, msgs <-chan string, prefix string) string {
	t.Helper()

	timeout := time.After(15 * time.Second)

	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}

			if m != "WATCHDOG=1" && !strings.HasPrefix(m, "STATUS=") {
				t.Fatalf("sd_notify %q while waiting for %q", m, prefix)
			}
		case <-timeout:
			t.Fatalf("no sd_notify %q", prefix)
		}
	}
}

func lineFrom(t *testing.T, c net.Conn, r *bufio.Reader) string {
	t.Helper()

	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))

	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reading through the proxy: %v", err)
	}

	return strings.TrimSuffix(line, "\n")
}

func servedBy(t *testing.T, addr string) string {
	t.Helper()

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	return lineFrom(t, c, bufio.NewReader(c))
}

// inherited is a listening socket handed to the daemon as systemd hands
// those of a socket unit: by descriptor, with a name.
type inherited struct {
	name string
	file *os.File
}

// listenInherited listens on addr and returns the socket as a file for the
// child, and its address. The test's own listener is closed: the child's
// copy keeps the socket, as systemd's does.
func listenInherited(t *testing.T, name, addr string) (inherited, string) {
	t.Helper()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}

	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}

	ln.Close()

	return inherited{name, f}, ln.Addr().String()
}

// startActivated runs `extractedprism run --config cfgPath` as systemd runs
// a socket-activated Type=notify service: the sockets from fd 3 on, named
// in LISTEN_FDNAMES, NOTIFY_SOCKET, and env. The socket files are closed
// once the child has them.
func startActivated(t *testing.T, cfgPath, notifyPath string, env []string, sockets ...inherited) (*exec.Cmd, *syncBuffer) {
	t.Helper()

	self, err := exec.LookPath("extractedprism")
	if err != nil {
		t.Fatal(err)
	}

	stderr := &syncBuffer{}
	names := make([]string, 0, len(sockets))

	// LISTEN_PID must be the daemon's own pid: sh sets it, then becomes it.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" "$@"`, self, "run", "--config", cfgPath)
	for _, s := range sockets {
		cmd.ExtraFiles = append(cmd.ExtraFiles, s.file)
		names = append(names, s.name)
	}

	cmd.Env = append(append(os.Environ(), "LISTEN_FDS="+strconv.Itoa(len(sockets)),
		"LISTEN_FDNAMES="+strings.Join(names, ":"), "NOTIFY_SOCKET="+notifyPath), env...)
	cmd.Stderr = stderr

	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { _ = cmd.Process.Kill() })

	for _, s := range sockets {
		s.file.Close()
	}

	return cmd, stderr
}

// stopActivated stops it as systemd does, and wants STOPPING=1 and a
// clean exit.
func stopActivated(t *testing.T, cmd *exec.Cmd, msgs <-chan string, stderr *syncBuffer) {
	t.Helper()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	expectNotify(t, msgs, "STOPPING=1")

	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}

func TestSocketActivationNotifyAndReload(t *testing.T) {
	t.Parallel()

	a := greeter(t, "127.0.6.1:0", "a")
	b := greeter(t, "127.0.6.2:0", "b")

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.toml")
	writeCfg := func(text string) {
		t.Helper()

		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// The configured bind address differs from the inherited socket's:
	// the socket wins.
	writeCfg(`endpoints = ["` + a + `"]
bind_address = "127.0.6.3"
health_address = "127.0.6.3"
enable_discovery = false
`)

	proxy, proxyAddr := listenInherited(t, "proxy", "127.0.6.4:0")

	// A client that connects before the daemon runs waits in the backlog.
	early, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()

	connected := time.Now()

	notifyPath, msgs := notifyListener(t)

	execAt := time.Now()
	cmd, stderr := startActivated(t, cfgPath, notifyPath, []string{"WATCHDOG_USEC=1000000"}, proxy)

	ready := expectNotify(t, msgs, "READY=1")
	toReady := time.Since(execAt)

	if !strings.Contains(ready, "\nSTATUS=") || !strings.Contains(ready, "upstreams healthy; discovery: off") {
		t.Fatalf("READY without a useful STATUS: %q", ready)
	}

	earlyR := bufio.NewReader(early)
	if got := lineFrom(t, early, earlyR); got != "a" {
		t.Fatalf("backlogged client served by %q, want a", got)
	}

	t.Logf("exec -> READY=1: %s; connect (before exec) -> first byte: %s", toReady, time.Since(connected))

	expectNotify(t, msgs, "WATCHDOG=1")

	// Reload with a new endpoint list: applied live, established
	// connections stay.
	writeCfg(`endpoints = ["` + b + `"]
bind_address = "127.0.6.3"
health_address = "127.0.6.3"
enable_discovery = false
log_level = "debug"
drain_timeout = "200ms"
`)

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	expectNotify(t, msgs, "RELOADING=1\nMONOTONIC_USEC=")
	expectNotify(t, msgs, "READY=1")

	if got := servedBy(t, proxyAddr); got != "b" {
		t.Fatalf("after the reload, served by %q, want b", got)
	}

	if _, err := io.WriteString(early, "still there\n"); err != nil {
		t.Fatal(err)
	}

	if got := lineFrom(t, early, earlyR); got != "still there" {
		t.Fatalf("established connection after reload echoed %q", got)
	}

	// A bad configuration is rejected with its location; nothing changes.
	writeCfg("endpoints = [\"no-port\"]\n")

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}

	expectNotify(t, msgs, "RELOADING=1")

	if m := expectNotify(t, msgs, "READY=1"); !strings.Contains(m, "last reload rejected, running the previous configuration: "+cfgPath+`:1: endpoints[0]: "no-port" has no port`) {
		t.Fatalf("STATUS after a rejected reload: %q", m)
	}

	if got := servedBy(t, proxyAddr); got != "b" {
		t.Fatalf("after the rejected reload, served by %q, want b", got)
	}

	stopActivated(t, cmd, msgs, stderr)

	log := stderr.String()
	for _, want := range []string{
		`using the inherited proxy socket, whose address differs from the configuration; the socket unit wins`,
		`configuration reloaded`,
		`"changed": ["endpoints`,
		`reload rejected; the running configuration stays in force`,
		cfgPath + `:1: endpoints[0]: \"no-port\" has no port`,
		`"closed": 1}`, // the early client, cut after the drain timeout
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
