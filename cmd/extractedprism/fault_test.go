package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runDaemon runs the real binary with cfg, under `ulimit -n` when nofile > 0,
// and returns its proxy address and its log.
func runDaemon(t *testing.T, cfg string, nofile int) (string, *syncBuffer) {
	t.Helper()

	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	self, err := exec.LookPath("extractedprism")
	if err != nil {
		t.Fatal(err)
	}

	script := `exec "$0" run --config "$1"`
	if nofile > 0 {
		script = "ulimit -n " + strconv.Itoa(nofile) + " && " + script
	}

	var log syncBuffer

	cmd := exec.Command("/bin/sh", "-c", script, self, path)
	cmd.Stderr = &log

	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})

	waitLog(t, &log, "INFO\tserving")

	for _, line := range strings.Split(log.String(), "\n") {
		if i := strings.Index(line, `"listen": "`); i >= 0 {
			return strings.SplitN(line[i+len(`"listen": "`):], `"`, 2)[0], &log
		}
	}

	t.Fatalf("no listen address in the log:\n%s", log.String())

	return "", nil
}

// waitLog waits for the daemon, another process, to log want.
func waitLog(t *testing.T, log *syncBuffer, want string) {
	t.Helper()

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon never logged %q:\n%s", want, log.String())
		}

		time.Sleep(20 * time.Millisecond)
	}
}

func greet(addr string) (net.Conn, string, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, "", err
	}

	_ = c.SetDeadline(time.Now().Add(30 * time.Second))

	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()

		return nil, "", err
	}

	return c, strings.TrimSuffix(line, "\n"), nil
}

// 5,000 concurrent proxied connections, all served, all alive at once.
func TestFiveThousandConcurrentConnections(t *testing.T) {
	t.Parallel()

	up := greeter(t, "127.0.7.1:0", "up")
	proxy, _ := runDaemon(t, `endpoints = ["`+up+`"]
bind_address = "127.0.7.2"
bind_port = 7445
health_address = "127.0.7.2"
health_check = "tcp"
enable_discovery = false
`, 0)

	const n = 5000

	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	for i := range n {
		c, name, err := greet(proxy)
		if err != nil || name != "up" {
			t.Fatalf("connection %d: %q, %v", i, name, err)
		}

		conns = append(conns, c)
	}

	// Every one of them still carries bytes.
	for i, c := range conns {
		if _, err := c.Write([]byte("k")); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}

		b := make([]byte, 1)
		if _, err := c.Read(b); err != nil || b[0] != 'k' {
			t.Fatalf("connection %d echoed %q, %v", i, b, err)
		}
	}
}

// Running out of descriptors once must not end the accept loop (the seed's
// proxy stopped for good): once load drops, new clients are served again.
func TestFDExhaustionAndRecovery(t *testing.T) {
	t.Parallel()

	up := greeter(t, "127.0.7.3:0", "up")
	proxy, log := runDaemon(t, `endpoints = ["`+up+`"]
bind_address = "127.0.7.4"
bind_port = 7445
health_address = "127.0.7.4"
health_check = "tcp"
enable_discovery = false
`, 64)

	// Hold connections until the daemon runs out: each costs it two.
	var held []net.Conn

	for range 60 {
		c, err := net.DialTimeout("tcp", proxy, time.Second)
		if err != nil {
			break
		}

		held = append(held, c)
	}

	waitLog(t, log, "accept failed; retrying")

	for _, c := range held {
		c.Close()
	}

	c, name, err := greet(proxy)
	if err != nil || name != "up" {
		t.Fatalf("after the shortage: %q, %v\n%s", name, err, log.String())
	}
	c.Close()

	waitLog(t, log, "accepting connections again")
}
