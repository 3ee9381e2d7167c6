package main

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/startfail"
)

// startUnderSystemd runs the binary as the unit does (NOTIFY_SOCKET,
// STATE_DIRECTORY) with the configuration text.
func startUnderSystemd(t *testing.T, stateDir, notify, configText string) *exec.Cmd {
	t.Helper()

	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte(configText), 0o600); err != nil {
		t.Fatal(err)
	}

	self, err := exec.LookPath("extractedprism")
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(self, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify, "STATE_DIRECTORY="+stateDir)

	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { _ = cmd.Process.Kill() })

	return cmd
}

// freePort is a port the kernel had free on addr (nothing else uses addr).
func freePort(t *testing.T, addr string) string {
	t.Helper()

	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	_, port, _ := net.SplitHostPort(ln.Addr().String())

	return port
}

func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()

	var ee *exec.ExitError
	if err := cmd.Wait(); errors.As(err, &ee) {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}

	return 0
}

// An invalid configuration under systemd: the reason is in STATUS=, and
// each failed start in a row waits longer (1 s, 2 s, ...) before exiting,
// so that Restart=always does not restart it every second. A good start
// resets the count.
func TestFailedStartsBackOffAndSayWhy(t *testing.T) {
	t.Parallel()

	state := t.TempDir()
	notify, msgs := notifyListener(t)
	bad := "endpoints = [\"10.0.0.1\"]\n"

	for i, want := range []string{"1 in a row), exiting in 1s", "2 in a row), exiting in 2s"} {
		cmd := startUnderSystemd(t, state, notify, bad)

		m := expectNotify(t, msgs, "STATUS=start failed")
		if !strings.Contains(m, want) || !strings.Contains(m, `config.toml:1: endpoints[0]: "10.0.0.1" has no port`) ||
			!strings.Contains(m, "EXTEND_TIMEOUT_USEC=") {
			t.Fatalf("start %d: %q, want %q and the error", i+1, m, want)
		}

		if code := exitCode(t, cmd); code != exitConfig {
			t.Fatalf("start %d: exit %d, want %d", i+1, code, exitConfig)
		}
	}

	// SIGTERM (systemctl stop) ends the wait at once.
	cmd := startUnderSystemd(t, state, notify, bad)
	expectNotify(t, msgs, "STATUS=start failed (3 in a row), exiting in 4s")

	stopAt := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	if code := exitCode(t, cmd); code != exitConfig || time.Since(stopAt) > 3*time.Second {
		t.Fatalf("SIGTERM while waiting: exit %d after %s; want %d at once", code, time.Since(stopAt), exitConfig)
	}

	// A good start clears the count.
	up := greeter(t, "127.0.6.30:0", "up")
	cmd = startUnderSystemd(t, state, notify, "endpoints = [\""+up+"\"]\nbind_address = \"127.0.6.31\"\nbind_port = "+freePort(t, "127.0.6.31")+"\n"+
		"health_address = \"127.0.6.31\"\nhealth_port = "+freePort(t, "127.0.6.31")+"\nenable_discovery = false\n")
	expectNotify(t, msgs, "READY=1")

	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(state, startfail.File)); errors.Is(err, os.ErrNotExist) {
			break
		}

		if time.Now().After(deadline) {
			t.Fatal("the failure count survived a successful start")
		}

		time.Sleep(10 * time.Millisecond)
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}
