//go:build demo

// Package demo is `make demo`: three real kube-apiservers on one etcd in a
// private network namespace, extractedprism in front of them on
// 127.0.0.1:7445 with only one of them configured, and a short tour. From a
// terminal it then opens a shell inside the namespace to try things.
package demo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/test/kubeharness"
)

func TestDemo(t *testing.T) {
	ips := []string{kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3}
	kubeharness.RequireNetns(t, ips...)

	bin, err := filepath.Abs("../../bin/extractedprism")
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	pki := kubeharness.NewPKI(t, dir, kubeharness.DefaultSANs(ips...))
	etcd := kubeharness.StartEtcd(t, "")
	servers := kubeharness.StartAPIServers(t, etcd, kubeharness.APIServerOptions{PKI: pki}, ips...)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	admin := pki.AdminClient(servers[0].URL())
	if _, err := admin.WaitForKubernetesSlice(ctx, ips...); err != nil {
		t.Fatal(err)
	}

	rbac, err := os.ReadFile("../../packaging/kubernetes/rbac-host.yaml")
	if err != nil {
		t.Fatal(err)
	}

	if err := admin.Create(ctx, rbac); err != nil {
		t.Fatal(err)
	}

	nodeKubeconfig := filepath.Join(dir, "node.kubeconfig")
	adminKubeconfig := filepath.Join(dir, "admin.kubeconfig")
	cfgPath := filepath.Join(dir, "config.toml")

	must(t, pki.UserKubeconfig(nodeKubeconfig, servers[0].URL(), pki.Node, ""))
	// What kubelet would use: the proxy, checked as kubernetes.default.svc.
	must(t, pki.UserKubeconfig(adminKubeconfig, "https://127.0.0.1:7445", pki.Admin, "kubernetes.default.svc"))
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`# only one API server is configured; discovery finds the others
endpoints = ["%s:6443"]
kubeconfig = "%s"
state_directory = "%s"
health_interval = "2s"
health_timeout = "1s"
`, ips[0], nodeKubeconfig, dir)), 0o600))

	daemon := exec.Command(bin, "run", "--config", cfgPath)
	daemon.Stdout, daemon.Stderr = logFile(t, filepath.Join(dir, "extractedprism.log"))
	must(t, daemon.Start())

	t.Cleanup(func() { _ = daemon.Process.Signal(os.Interrupt); _ = daemon.Wait() })

	say("extractedprism is serving 127.0.0.1:7445 with one static endpoint (%s:6443); waiting for discovery...", ips[0])

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(run(bin, "status"), "3/3 upstreams healthy") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}

	say("$ extractedprism status\n%s", run(bin, "status"))

	if _, err := exec.LookPath("kubectl"); err == nil {
		say("$ kubectl --kubeconfig admin.kubeconfig get endpointslice kubernetes\n%s",
			run("kubectl", "--kubeconfig", adminKubeconfig, "get", "endpointslice", "kubernetes"))
	}

	say("stopping the API server on %s gracefully...", ips[2])
	must(t, servers[2].Stop())
	time.Sleep(time.Second) // let the reader see the change, not a synchronisation

	say("$ extractedprism status\n%s", run(bin, "status"))

	if os.Getenv("DEMO_SHELL") == "" {
		return
	}

	say(`A shell inside the demo's network namespace. Try:
  extractedprism status                  # the table; --json for the document
  curl -s 127.0.0.1:7446/status          # the same over HTTP
  kubectl --kubeconfig $ADMIN get ns     # through the proxy, TLS checked as kubernetes.default.svc
  tail -f $LOG                           # the daemon's log
Exit the shell to stop everything.`)

	sh := exec.Command("bash", "-i")
	sh.Stdin, sh.Stdout, sh.Stderr = os.Stdin, os.Stdout, os.Stderr
	sh.Env = append(os.Environ(), "ADMIN="+adminKubeconfig, "LOG="+filepath.Join(dir, "extractedprism.log"),
		"PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "PS1=(extractedprism demo) $ ")
	_ = sh.Run()
}

func must(t *testing.T, err error) {
	t.Helper()

	if err != nil {
		t.Fatal(err)
	}
}

func say(format string, args ...any) { fmt.Printf("\n"+format+"\n", args...) }

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out) + err.Error()
	}

	return string(out)
}

func logFile(t *testing.T, path string) (*os.File, *os.File) {
	t.Helper()

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { f.Close() })

	return f, f
}
