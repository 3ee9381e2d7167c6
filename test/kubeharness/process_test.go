package kubeharness

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProcessStopAndRestart(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err) // coreutils: a missing sleep is a broken machine, not a reason to skip
	}

	p := &process{name: "sleep", bin: sleep, args: []string{"60"}, logPath: filepath.Join(t.TempDir(), "sleep.log")}

	for range 2 {
		if err := p.start(); err != nil {
			t.Fatal(err)
		}

		if !p.running() {
			t.Fatal("not running after start")
		}

		if err := p.stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}

		if p.running() {
			t.Fatal("running after stop")
		}
	}

	if err := p.stop(time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}

	log, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}

	if n := strings.Count(string(log), "exited: signal: terminated"); n != 2 {
		t.Errorf("log records %d terminations, want 2:\n%s", n, log)
	}
}

// A paused process (SIGSTOP, as tests hang an apiserver or stall etcd)
// still stops cleanly: stop continues it, so the SIGTERM is acted on
// instead of waiting out the grace and killing it. The child handles
// SIGTERM, as apiserver and etcd do: an unhandled one would end even a
// stopped process.
func TestStopPausedProcess(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}

	p := &process{
		name: "sh", bin: sh, args: []string{"-c", "trap 'exit 0' TERM; echo trap$((1+1)); while :; do sleep 0.1; done"},
		logPath: filepath.Join(t.TempDir(), "sh.log"),
	}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	if err := Poll(ctx, 10*time.Millisecond, func(context.Context) (bool, string, error) {
		// The start line quotes the script; only the shell prints "trap2".
		return p.logTail(1) == "trap2", p.logTail(1), nil
	}); err != nil {
		t.Fatalf("the shell never set its trap: %v", err)
	}

	if err := p.pause(); err != nil {
		t.Fatal(err)
	}

	if err := p.stop(5 * time.Second); err != nil {
		t.Fatalf("stopping a paused process: %v", err)
	}

	log, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}

	if !strings.Contains(string(log), "exited: exit status 0") {
		t.Errorf("the paused process did not end by its SIGTERM:\n%s", log)
	}
}
