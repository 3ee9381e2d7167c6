package kubeharness

import (
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
