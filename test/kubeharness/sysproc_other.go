//go:build !linux

package kubeharness

import (
	"os/exec"
	"syscall"
)

// sysProcAttr: only Linux offers Pdeathsig; the harness needs Linux network
// namespaces anyway, this just keeps the package compiling elsewhere.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// withHostname is a no-op without Linux UTS namespaces.
func withHostname(*exec.Cmd, string) {}
