package kubeharness

import (
	"os/exec"
	"syscall"
)

// sysProcAttr makes children die with the test binary (a crashed or killed
// test must not leave an apiserver holding 6443), and puts them in their own
// process group so a terminal's Ctrl-C reaches only the test, which then
// stops them in order.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// withHostname rewrites cmd to run in a new UTS namespace under hostname.
// kube-apiserver derives its identity (the kube-system/apiserver-<hash>
// lease) from the host name, so apiservers sharing a host would fight over
// one lease; real control-plane nodes each have their own.
//
// The shell sets the name and then execs the target, so the PID, signals
// and exit status are the target's own. hostname(1) uses sethostname(2),
// which also works as root of a user namespace, where /proc/sys is not
// writable; failing both only costs the distinct identity, so it is logged,
// not fatal.
func withHostname(cmd *exec.Cmd, hostname string) {
	const script = `hostname "$0" 2>/dev/null || echo "$0" 2>/dev/null >/proc/sys/kernel/hostname ||
echo "kubeharness: cannot set the host name; this apiserver shares its identity lease" >&2
exec "$@"`

	cmd.Args = append([]string{"/bin/sh", "-c", script, hostname, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = "/bin/sh"
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUTS
}
