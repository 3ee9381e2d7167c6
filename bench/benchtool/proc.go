package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process this harness started. Every child is recorded in the
// pid file while it lives, so that run.sh's exit trap can stop it by pid
// even if this program dies; the kernel also kills it (Pdeathsig) when this
// program goes away.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

type procs struct {
	mu      sync.Mutex
	live    map[int]*child
	extra   map[int]bool // grandchildren (nginx workers), for the pid file only
	pidfile string
	logdir  string
	cred    *syscall.Credential // run peers unprivileged when we are root
}

func newProcs(pidfile, logdir string) *procs {
	p := &procs{live: map[int]*child{}, extra: map[int]bool{}, pidfile: pidfile, logdir: logdir}

	if os.Geteuid() == 0 {
		if u, err := user.Lookup("nobody"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
		}
	}

	return p
}

func (p *procs) writePidfile() {
	if p.pidfile == "" {
		return
	}

	pids := make([]int, 0, len(p.live))
	for pid := range p.live {
		pids = append(pids, pid)
	}

	for pid := range p.extra {
		pids = append(pids, pid)
	}

	sort.Ints(pids)

	var b strings.Builder
	for _, pid := range pids {
		fmt.Fprintf(&b, "%d\n", pid)
	}

	tmp := p.pidfile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		_ = os.Rename(tmp, p.pidfile)
	}
}

// start runs argv as name, unprivileged when possible, output to a log
// file. before is called right before the fork+exec.
func (p *procs) start(name string, argv, env []string, unprivileged bool, before func()) (*child, error) {
	logf, err := os.OpenFile(filepath.Join(p.logdir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	if unprivileged && p.cred != nil {
		cmd.SysProcAttr.Credential = p.cred
	}

	if before != nil {
		before()
	}

	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}

	c := &child{name: name, cmd: cmd, done: make(chan struct{})}

	p.mu.Lock()
	p.live[cmd.Process.Pid] = c
	p.writePidfile()
	p.mu.Unlock()

	go func() {
		c.err = cmd.Wait()

		p.mu.Lock()
		delete(p.live, cmd.Process.Pid)
		p.writePidfile()
		p.mu.Unlock()
		close(c.done)
	}()

	return c, nil
}

// adopt records c's children (nginx workers) in the pid file until c stops.
func (p *procs) adopt(c *child) {
	kids := childPids(c.pid())

	p.mu.Lock()
	for _, k := range kids {
		p.extra[k] = true
	}

	p.writePidfile()
	p.mu.Unlock()

	go func() {
		<-c.done

		p.mu.Lock()
		for _, k := range kids {
			delete(p.extra, k)
		}

		p.writePidfile()
		p.mu.Unlock()
	}()
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends sig, waits up to grace, then SIGKILLs. Children of the process
// (nginx workers) are collected first and killed by pid if they outlive it.
func (c *child) stop(sig syscall.Signal, grace time.Duration) {
	if c.exited() {
		return
	}

	kids := childPids(c.pid())
	_ = c.cmd.Process.Signal(sig)

	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}

	for _, k := range kids {
		if pidAlive(k) {
			_ = syscall.Kill(k, syscall.SIGKILL)
		}
	}
}

func (p *procs) stopAll() {
	p.mu.Lock()
	all := make([]*child, 0, len(p.live))
	for _, c := range p.live {
		all = append(all, c)
	}
	p.mu.Unlock()

	for _, c := range all {
		c.stop(syscall.SIGTERM, 3*time.Second)
	}
}

func pidAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie is not alive.
	f := statFields(string(b))

	return len(f) > 0 && f[0] != "Z"
}

// statFields returns the fields of /proc/PID/stat after the command name,
// starting with the state (field 3).
func statFields(s string) []string {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}

	return strings.Fields(s[i+1:])
}

// childPids lists the direct children of pid (nginx's workers).
func childPids(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}

	var out []int

	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}

		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}

		f := statFields(string(b))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, k)
		}
	}

	return out
}

// tree is a process and its direct children: the proxy as a whole.
func tree(pid int) []int { return append([]int{pid}, childPids(pid)...) }

// usage is what /proc says about a process tree.
type usage struct {
	RSSKiB   int64 // sum of VmRSS
	FDs      int   // sum of open descriptors
	CPUTicks int64 // sum of utime+stime, in USER_HZ (100/s)
}

func readUsage(pid int) (usage, error) {
	var u usage

	for _, p := range tree(pid) {
		rss, err := vmRSS(p)
		if err != nil {
			return u, err
		}

		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			return u, err
		}

		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return u, err
		}

		f := statFields(string(b))
		if len(f) < 13 {
			return u, errors.New("short /proc stat")
		}
		// utime and stime are fields 14 and 15; f[0] is field 3.
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)

		u.RSSKiB += rss
		u.FDs += len(ents)
		u.CPUTicks += ut + st
	}

	return u, nil
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}

	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}

	return 0, errors.New("no VmRSS")
}

const userHZ = 100

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}

	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}

	return strings.Join(lines, "\n")
}
