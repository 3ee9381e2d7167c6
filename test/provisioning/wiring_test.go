//go:build provisioning

package provisioning

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// kubeadmKubeletConf is what `kubeadm join` leaves in
// /etc/kubernetes/kubelet.conf (after the TLS bootstrap).
const kubeadmKubeletConf = `apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://10.0.0.1:6443
  name: default-cluster
contexts:
- context:
    cluster: default-cluster
    namespace: default
    user: default-auth
  name: default-context
current-context: default-context
kind: Config
preferences: {}
users:
- name: default-auth
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
`

// runWiring runs the wiring script with POSIX sh (dash on Debian) on conf,
// with the given extra environment.
func runWiring(t *testing.T, conf string, env ...string) (string, error) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	script, err := filepath.Abs(filepath.Join(root, wiringScript))
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, "sh", script)
	// No /run/systemd/system here, so the script never touches systemctl.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "KUBELET_KUBECONFIG=" + conf}, env...)
	out, err := cmd.CombinedOutput()

	return string(out), err
}

func writeConf(t *testing.T, content string) string {
	t.Helper()

	conf := filepath.Join(t.TempDir(), "kubelet.conf")
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}

	return conf
}

func clusterOf(t *testing.T, conf string) map[string]any {
	t.Helper()

	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}

	doc := yamlDocs(t, conf, string(data))[0]

	return mustGet(t, doc, "clusters", 0, "cluster").(map[string]any)
}

func TestKubeletWiring(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Fatal("systemd is PID 1 here: the script would restart the real kubelet; run elsewhere")
	}

	t.Run("rewrites server and sets tls-server-name", func(t *testing.T) {
		conf := writeConf(t, kubeadmKubeletConf)
		if out, err := runWiring(t, conf); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}

		c := clusterOf(t, conf)
		if c["server"] != "https://127.0.0.1:7445" || c["tls-server-name"] != "kubernetes" {
			t.Fatalf("cluster after rewrite: %v", c)
		}

		if c["certificate-authority-data"] == nil {
			t.Fatal("the CA was lost")
		}

		got, _ := os.ReadFile(conf)
		want := strings.Replace(kubeadmKubeletConf, "    server: https://10.0.0.1:6443\n",
			"    server: https://127.0.0.1:7445\n    tls-server-name: kubernetes\n", 1)
		if string(got) != want {
			t.Fatalf("anything but those two lines changed:\n%s", got)
		}

		if st, err := os.Stat(conf); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("mode after rewrite: %v %v, want 0600", st.Mode(), err)
		}

		if orig, err := os.ReadFile(conf + ".before-extractedprism"); err != nil || string(orig) != kubeadmKubeletConf {
			t.Fatalf("the original was not kept: %v", err)
		}
	})

	t.Run("second run changes nothing", func(t *testing.T) {
		conf := writeConf(t, kubeadmKubeletConf)
		if out, err := runWiring(t, conf); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}

		before, _ := os.Stat(conf)

		out, err := runWiring(t, conf)
		if err != nil || !strings.Contains(out, "already points at") {
			t.Fatalf("%v\n%s", err, out)
		}

		if after, _ := os.Stat(conf); !os.SameFile(before, after) {
			t.Fatal("the file was replaced although nothing changed")
		}
	})

	t.Run("replaces another tls-server-name", func(t *testing.T) {
		conf := writeConf(t, strings.Replace(kubeadmKubeletConf, "    server:", "    tls-server-name: api.example.com\n    server:", 1))
		if out, err := runWiring(t, conf); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}

		if c := clusterOf(t, conf); c["tls-server-name"] != "kubernetes" {
			t.Fatalf("cluster: %v", c)
		}
	})

	t.Run("empty KUBELET_TLS_SERVER_NAME leaves the name alone", func(t *testing.T) {
		conf := writeConf(t, kubeadmKubeletConf)
		if out, err := runWiring(t, conf, "KUBELET_TLS_SERVER_NAME="); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}

		if c := clusterOf(t, conf); c["server"] != "https://127.0.0.1:7445" || c["tls-server-name"] != nil {
			t.Fatalf("cluster: %v", c)
		}
	})

	t.Run("missing file is not an error", func(t *testing.T) {
		conf := filepath.Join(t.TempDir(), "kubelet.conf")
		if out, err := runWiring(t, conf); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}

		if _, err := os.Stat(conf); !os.IsNotExist(err) {
			t.Fatalf("created %s: %v", conf, err)
		}
	})

	t.Run("refuses a kubeconfig with two clusters", func(t *testing.T) {
		two := strings.Replace(kubeadmKubeletConf, "  name: default-cluster\n",
			"  name: default-cluster\n- cluster:\n    server: https://10.0.0.2:6443\n  name: other\n", 1)
		conf := writeConf(t, two)

		if out, err := runWiring(t, conf); err == nil {
			t.Fatalf("accepted:\n%s", out)
		}

		if got, _ := os.ReadFile(conf); string(got) != two {
			t.Fatal("the file was changed")
		}
	})
}

// systemd-analyze verify prints nothing for good units (it exits 0 on
// unknown keys, so any output is a failure), as in hack/check-units.sh.
func TestKubeletWiringUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is not installed")
	}

	sysroot := t.TempDir()
	for _, d := range []string{"usr/local/sbin", "usr/lib/systemd", "etc/systemd/system"} {
		if err := os.MkdirAll(filepath.Join(sysroot, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}

	if out, err := exec.Command("cp", "-a", "/usr/lib/systemd/system", filepath.Join(sysroot, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	for src, dst := range map[string]string{
		wiringScript:  "usr/local/sbin/extractedprism-kubelet-wiring",
		wiringService: "etc/systemd/system/extractedprism-kubelet-wiring.service",
		wiringPath:    "etc/systemd/system/extractedprism-kubelet-wiring.path",
	} {
		mode := os.FileMode(0o644)
		if src == wiringScript {
			mode = 0o755
		}

		if err := os.WriteFile(filepath.Join(sysroot, dst), []byte(repoFile(t, src)), mode); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", "--root="+sysroot,
		"extractedprism-kubelet-wiring.service", "extractedprism-kubelet-wiring.path").CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
