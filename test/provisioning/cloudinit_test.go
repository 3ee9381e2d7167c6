//go:build provisioning

package provisioning

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var userData = []string{"packaging/cloud-init/apt.yaml", "packaging/cloud-init/dnf.yaml"}

// variants returns a shipped file as it is and with its OPTIONAL blocks
// uncommented, the two ways an operator uses it.
func variants(t *testing.T, file string) map[string]string {
	t.Helper()

	text := repoFile(t, file)

	optional, n, err := uncommentOptional(text)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}

	if n == 0 {
		return map[string]string{filepath.Base(file): text}
	}

	return map[string]string{filepath.Base(file): text, filepath.Base(file) + "+optional": optional}
}

func writeFile(t *testing.T, cfg map[string]any, path string) map[string]any {
	t.Helper()

	files, _ := cfg["write_files"].([]any)
	for _, f := range files {
		if m, _ := f.(map[string]any); m["path"] == path {
			return m
		}
	}

	return nil
}

func TestCloudInitSchema(t *testing.T) {
	if _, err := exec.LookPath("cloud-init"); err != nil {
		t.Fatal("cloud-init is not installed (run.sh installs Debian's package)")
	}

	for _, file := range userData {
		for name, text := range variants(t, file) {
			t.Run(name, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "user-data")
				if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}

				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()

				out, err := exec.CommandContext(ctx, "cloud-init", "schema", "--config-file", path).CombinedOutput()
				if err != nil || !bytes.Contains(out, []byte("Valid cloud-config")) {
					t.Fatalf("cloud-init schema: %v\n%s", err, out)
				}
			})
		}
	}
}

// The reason write_files is not deferred: in cloud-init's module order it
// runs in the init stage, before the repository is added and the package
// installed, and runcmd's commands run after both.
func TestCloudInitModuleOrder(t *testing.T) {
	data, err := os.ReadFile("/etc/cloud/cloud.cfg")
	if err != nil {
		t.Fatalf("Debian's cloud-init package is not installed: %v", err)
	}

	cfg := yamlDocs(t, "cloud.cfg", string(data))[0]
	stage := func(key string) []string {
		var mods []string

		list, _ := cfg[key].([]any)
		for _, m := range list {
			if s, ok := m.(string); ok {
				mods = append(mods, strings.ReplaceAll(s, "-", "_"))
			}
		}

		return mods
	}
	initMods, configMods, finalMods := stage("cloud_init_modules"), stage("cloud_config_modules"), stage("cloud_final_modules")

	for _, c := range []struct {
		mods []string
		mod  string
	}{
		{initMods, "write_files"},
		{configMods, "apt_configure"},
		{configMods, "runcmd"},
		{finalMods, "package_update_upgrade_install"},
		{finalMods, "write_files_deferred"},
		{finalMods, "scripts_user"},
	} {
		if !slices.Contains(c.mods, c.mod) {
			t.Errorf("module %s is not in the expected stage: init %v, config %v, final %v", c.mod, initMods, configMods, finalMods)
		}
	}

	if slices.Index(finalMods, "package_update_upgrade_install") > slices.Index(finalMods, "scripts_user") {
		t.Errorf("runcmd's commands (scripts_user) run before the packages are installed: %v", finalMods)
	}
}

func TestCloudInitContent(t *testing.T) {
	dropIn := repoFile(t, "packaging/systemd/kubeconfig.conf")

	for _, file := range userData {
		for name, text := range variants(t, file) {
			optional := strings.HasSuffix(name, "+optional")
			dnf := strings.HasPrefix(name, "dnf")

			t.Run(name, func(t *testing.T) {
				if !strings.HasPrefix(text, "#cloud-config\n") {
					t.Fatal("the first line must be #cloud-config")
				}

				cfg := yamlDocs(t, name, text)[0]

				// The repository: the client file of packaging/repo/
				// verbatim (REPLACE-ME URL) and a placeholder key at the
				// path it names, both written before the install.
				client := struct{ path, source, key string }{
					"/etc/apt/sources.list.d/extractedprism.sources", "packaging/repo/extractedprism.sources",
					"/etc/apt/keyrings/extractedprism.asc",
				}
				if dnf {
					client = struct{ path, source, key string }{
						"/etc/yum.repos.d/extractedprism.repo", "packaging/repo/extractedprism.repo",
						"/etc/pki/rpm-gpg/RPM-GPG-KEY-extractedprism",
					}
				}

				if f := writeFile(t, cfg, client.path); f == nil || f["content"] != repoFile(t, client.source) ||
					f["permissions"] != "0644" || (f["defer"] != nil && f["defer"] != false) {
					t.Errorf("%s: want %s verbatim, 0644, not deferred", client.path, client.source)
				}

				if !strings.Contains(repoFile(t, client.source), client.key) {
					t.Errorf("%s does not name the key file %s", client.source, client.key)
				}

				key := writeFile(t, cfg, client.key)
				keyText, _ := key["content"].(string)
				if !strings.Contains(keyText, "REPLACE-ME") ||
					!strings.HasPrefix(keyText, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n") {
					t.Errorf("%s: want an armoured key placeholder marked REPLACE-ME, got %v", client.key, key)
				}

				if cfg["apt"] != nil || cfg["yum_repos"] != nil {
					t.Error("a second repository definition (apt: / yum_repos:) besides the client file")
				}

				if pkgs, _ := cfg["packages"].([]any); !slices.Contains(pkgs, any("extractedprism")) {
					t.Errorf("packages: %v lacks extractedprism", pkgs)
				}

				conf := writeFile(t, cfg, "/etc/extractedprism/config.toml")
				if conf == nil {
					t.Fatal("no write_files entry for /etc/extractedprism/config.toml")
				}

				if d, ok := conf["defer"]; ok && d != false {
					t.Error("config.toml is deferred: it would be written after the package is installed")
				}

				if conf["permissions"] != "0644" {
					t.Errorf("config.toml permissions %v, want 0644 (readable by the service's dynamic user)", conf["permissions"])
				}

				checkConfig(t, conf["content"].(string), nil)

				for _, w := range []struct{ path, source, mode string }{
					{"/usr/local/sbin/extractedprism-kubelet-wiring", wiringScript, "0755"},
					{"/etc/systemd/system/extractedprism-kubelet-wiring.service", wiringService, "0644"},
					{"/etc/systemd/system/extractedprism-kubelet-wiring.path", wiringPath, "0644"},
				} {
					f := writeFile(t, cfg, w.path)
					if f == nil || f["content"] != repoFile(t, w.source) || f["permissions"] != w.mode {
						t.Errorf("%s: want %s verbatim with mode %s", w.path, w.source, w.mode)
					}
				}

				kubeconfig := writeFile(t, cfg, "/etc/extractedprism/kubeconfig")
				credential := writeFile(t, cfg, "/etc/systemd/system/extractedprism.service.d/kubeconfig.conf")

				if !optional {
					if kubeconfig != nil || credential != nil {
						t.Error("the discovery credentials must be optional (commented out)")
					}
				} else {
					if kubeconfig == nil || kubeconfig["permissions"] != "0600" || kubeconfig["owner"] != "root:root" {
						t.Errorf("kubeconfig: want root:root 0600, got %v", kubeconfig)
					}

					if d, ok := kubeconfig["defer"]; ok && d != false {
						t.Error("the kubeconfig is deferred: the first start would run without it")
					}

					if credential == nil || credential["content"] != dropIn {
						t.Error("the credential drop-in must be packaging/systemd/kubeconfig.conf verbatim")
					}
				}

				var cmds []string

				runcmd, _ := cfg["runcmd"].([]any)
				for _, c := range runcmd {
					if l, ok := c.([]any); ok {
						var words []string
						for _, w := range l {
							words = append(words, w.(string))
						}

						cmds = append(cmds, strings.Join(words, " "))
					}
				}

				for _, want := range []string{
					"systemctl enable --now extractedprism.socket",
					"systemctl enable --now extractedprism-kubelet-wiring.path extractedprism-kubelet-wiring.service",
				} {
					if !slices.Contains(cmds, want) {
						t.Errorf("runcmd lacks %q: %q", want, cmds)
					}
				}

				// The link-local switch is off unless uncommented.
				if on := slices.Contains(cmds, "systemctl enable --now extractedprism-link-local.service"); on != optional {
					t.Errorf("link-local socket enabled: %v, want %v (optional blocks uncommented: %v)", on, optional, optional)
				}
			})
		}
	}
}
