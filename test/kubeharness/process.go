package kubeharness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// logTailLines is how much of each process log a failing test prints.
	logTailLines = 60
	// killWait bounds how long a SIGKILLed process may take to be reaped.
	killWait = 10 * time.Second
)

// process is one child process whose output goes to a log file. It can be
// started again after it exited (Restart); each run appends to the same log.
type process struct {
	name    string
	bin     string
	args    []string
	logPath string
	// hostname, when set, runs the process in its own UTS namespace with
	// this host name (see withHostname). Cleared if that is not permitted.
	hostname string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the current run has been reaped
}

func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.done != nil && !isClosed(p.done) {
		return fmt.Errorf("%s is already running", p.name)
	}

	logFile, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.name, err)
	}

	fmt.Fprintf(logFile, "=== %s start: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))

	cmd, err := p.startCommand(logFile)
	if err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}

	done := make(chan struct{})
	p.cmd, p.done = cmd, done

	go reap(cmd, logFile, done)

	return nil
}

func (p *process) startCommand(logFile *os.File) (*exec.Cmd, error) {
	cmd := p.command(logFile)

	err := cmd.Start()
	if err != nil && p.hostname != "" && errors.Is(err, syscall.EPERM) {
		// Without CAP_SYS_ADMIN there is no UTS namespace; sharing the host
		// name only costs distinct apiserver identities, not correctness
		// of the tests.
		fmt.Fprintf(logFile, "=== no permission for a UTS namespace (%v); keeping the host name\n", err)
		p.hostname = ""
		cmd = p.command(logFile)
		err = cmd.Start()
	}

	return cmd, err
}

func (p *process) command(logFile *os.File) *exec.Cmd {
	cmd := exec.Command(p.bin, p.args...)
	cmd.SysProcAttr = sysProcAttr()

	if p.hostname != "" {
		withHostname(cmd, p.hostname)
	}

	cmd.Stdout = logFile
	cmd.Stderr = logFile

	return cmd
}

// reap records the exit status in the log, so a crash is visible in the
// tail printed on failure.
func reap(cmd *exec.Cmd, logFile *os.File, done chan struct{}) {
	err := cmd.Wait()
	fmt.Fprintf(logFile, "=== %s exited: %v\n", time.Now().Format(time.RFC3339Nano), exitDescription(err))
	logFile.Close()
	close(done)
}

func exitDescription(err error) string {
	if err == nil {
		return "exit status 0"
	}

	return err.Error()
}

// exited is closed when the current run has ended; nil before the first start.
func (p *process) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.done
}

func (p *process) running() bool {
	done := p.exited()

	return done != nil && !isClosed(done)
}

func (p *process) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}

	return p.cmd.Process.Pid
}

// signal sends sig to the current run; a process that already exited is not
// an error, so Stop after Kill (or a double Stop) is harmless.
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if p.cmd == nil || isClosed(p.done) {
		return nil
	}

	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("send %v to %s: %w", sig, p.name, err)
	}

	return nil
}

// wait waits up to timeout for the current run to end.
func (p *process) wait(timeout time.Duration) error {
	done := p.exited()
	if done == nil {
		return nil
	}

	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s (pid %d) did not exit within %v", p.name, p.pid(), timeout)
	}
}

// pause stops the process with SIGSTOP, like a hung one: its sockets stay
// open and the kernel still accepts connections for it, but nothing is
// answered. resume continues it.
func (p *process) pause() error { return p.signal(syscall.SIGSTOP) }

func (p *process) resume() error { return p.signal(syscall.SIGCONT) }

// stop sends SIGTERM and waits up to grace; a process still alive after that
// is SIGKILLed and the stop reported as an error, because a hung shutdown is
// a bug worth seeing. A paused process is continued, so that it can act on
// the SIGTERM (a test that failed while it was paused still cleans up).
func (p *process) stop(grace time.Duration) error {
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}

	if err := p.resume(); err != nil {
		return err
	}

	waitErr := p.wait(grace)
	if waitErr == nil {
		return nil
	}

	if err := p.kill(); err != nil {
		return errors.Join(waitErr, err)
	}

	return fmt.Errorf("%w; killed it", waitErr)
}

func (p *process) kill() error {
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}

	return p.wait(killWait)
}

// logTail returns the last n lines of the log.
func (p *process) logTail(n int) string {
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}

	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}

	return string(bytes.Join(lines, []byte("\n")))
}

// dumpLogOnFailure prints the log tail when t has failed. Register it before
// the cleanup that stops the process, so it runs after it and includes the
// shutdown.
func (p *process) dumpLogOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last %d lines of %s (%s) ---\n%s\n--- end of %s log ---",
				logTailLines, p.name, p.logPath, p.logTail(logTailLines), p.name)
		}
	})
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
