// Package butane translates the Butane configs under packaging/butane with
// the butane library, as `butane --strict` would, validates the Ignition
// output with the ignition library and checks what it installs. It is a
// module of its own so that butane and ignition stay out of the daemon's
// go.sum. Run it through test/provisioning/run.sh, which sets EP_BINARY.
package butane

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	butane "github.com/coreos/butane/config"
	"github.com/coreos/butane/config/common"
	ignition "github.com/coreos/ignition/v2/config"
	v34 "github.com/coreos/ignition/v2/config/v3_4"
	v35 "github.com/coreos/ignition/v2/config/v3_5"
	"github.com/coreos/ignition/v2/config/v3_7_experimental/types"
	"github.com/coreos/vcontext/report"
	"github.com/vincent-petithory/dataurl"
)

const root = "../../.."

type platform struct {
	file       string
	ignition   string // the Ignition spec version the variant produces
	parse      func([]byte) (report.Report, error)
	binary     string // where the binary goes: /usr is read-only on both
	wiringPath string
}

var platforms = []platform{
	{
		file: "packaging/butane/fcos.bu", ignition: "3.5.0",
		parse: func(b []byte) (report.Report, error) {
			_, r, err := v35.Parse(b)

			return r, err
		},
		binary: "/usr/local/bin/extractedprism", wiringPath: "/usr/local/sbin/extractedprism-kubelet-wiring",
	},
	{
		file: "packaging/butane/flatcar.bu", ignition: "3.4.0",
		parse: func(b []byte) (report.Report, error) {
			_, r, err := v34.Parse(b)

			return r, err
		},
		binary: "/opt/bin/extractedprism", wiringPath: "/opt/bin/extractedprism-kubelet-wiring",
	},
}

func repoFile(t *testing.T, rel string) string {
	t.Helper()

	data, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}

	return string(data)
}

// uncommentOptional enables the "BEGIN OPTIONAL ... END OPTIONAL" blocks as
// an operator would: every line between the markers loses its "# ".
// (The same rule as test/provisioning's; this module cannot import it.)
func uncommentOptional(text string) (string, int, error) {
	lines := strings.Split(text, "\n")
	blocks, in := 0, false

	for i, line := range lines {
		trimmed := strings.TrimSpace(line)

		switch {
		case strings.HasPrefix(trimmed, "# BEGIN OPTIONAL"):
			if in {
				return "", 0, fmt.Errorf("line %d: nested BEGIN OPTIONAL", i+1)
			}

			in = true
			blocks++
		case strings.HasPrefix(trimmed, "# END OPTIONAL"):
			in = false
		case in:
			indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
			rest := line[len(indent):]

			switch {
			case rest == "#":
				lines[i] = indent
			case strings.HasPrefix(rest, "# "):
				lines[i] = indent + rest[2:]
			default:
				return "", 0, fmt.Errorf("line %d: not commented out inside an OPTIONAL block: %q", i+1, line)
			}
		}
	}

	if in {
		return "", 0, fmt.Errorf("BEGIN OPTIONAL without END")
	}

	return strings.Join(lines, "\n"), blocks, nil
}

// contents decodes an Ignition file's inline contents (a data URL, gzipped
// when butane compressed it).
func contents(t *testing.T, f types.File) string {
	t.Helper()

	if f.Contents.Source == nil {
		t.Fatalf("%s: no contents", f.Path)
	}

	u, err := dataurl.DecodeString(*f.Contents.Source)
	if err != nil {
		t.Fatalf("%s: %v", f.Path, err)
	}

	data := u.Data
	if f.Contents.Compression != nil && *f.Contents.Compression == "gzip" {
		r, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}

		if data, err = io.ReadAll(r); err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
	}

	return string(data)
}

func translate(t *testing.T, p platform, input string) (types.Config, []byte) {
	t.Helper()

	out, rep, err := butane.TranslateBytes([]byte(input), common.TranslateBytesOptions{})
	if err != nil {
		t.Fatalf("butane: %v\n%s", err, rep.String())
	}

	// `butane --strict`: warnings fail too.
	if len(rep.Entries) > 0 {
		t.Fatalf("butane reports:\n%s", rep.String())
	}

	var head struct {
		Ignition struct {
			Version string `json:"version"`
		} `json:"ignition"`
	}
	if err := json.Unmarshal(out, &head); err != nil || head.Ignition.Version != p.ignition {
		t.Fatalf("Ignition version %q (%v), want %s", head.Ignition.Version, err, p.ignition)
	}

	// The spec version the OS's Ignition reads, strictly.
	if rep, err := p.parse(out); err != nil || len(rep.Entries) > 0 {
		t.Fatalf("ignition %s: %v\n%s", p.ignition, err, rep.String())
	}

	cfg, rep, err := ignition.Parse(out)
	if err != nil || rep.IsFatal() {
		t.Fatalf("ignition: %v\n%s", err, rep.String())
	}

	return cfg, out
}

func file(cfg types.Config, path string) *types.File {
	for i := range cfg.Storage.Files {
		if cfg.Storage.Files[i].Path == path {
			return &cfg.Storage.Files[i]
		}
	}

	return nil
}

func unit(cfg types.Config, name string) *types.Unit {
	for i := range cfg.Systemd.Units {
		if cfg.Systemd.Units[i].Name == name {
			return &cfg.Systemd.Units[i]
		}
	}

	return nil
}

func dropin(u *types.Unit, name string) *types.Dropin {
	for i := range u.Dropins {
		if u.Dropins[i].Name == name {
			return &u.Dropins[i]
		}
	}

	return nil
}

func mode(f *types.File) int {
	if f == nil || f.Mode == nil {
		return -1
	}

	return *f.Mode
}

func str(s *string) string {
	if s == nil {
		return ""
	}

	return *s
}

func binary(t *testing.T) string {
	t.Helper()

	bin := os.Getenv("EP_BINARY")
	if bin == "" {
		t.Fatal("EP_BINARY is not set: run test/provisioning/run.sh")
	}

	return bin
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func TestButane(t *testing.T) {
	for _, p := range platforms {
		text := repoFile(t, p.file)

		optional, n, err := uncommentOptional(text)
		if err != nil || n == 0 {
			t.Fatalf("%s: optional blocks: %d, %v", p.file, n, err)
		}

		for name, input := range map[string]string{filepath.Base(p.file): text, filepath.Base(p.file) + "+optional": optional} {
			withCredentials := strings.HasSuffix(name, "+optional")

			t.Run(name, func(t *testing.T) {
				cfg, _ := translate(t, p, input)

				t.Run("binary", func(t *testing.T) {
					f := file(cfg, p.binary)
					if f == nil || mode(f) != 0o755 {
						t.Fatalf("%s: want a file with mode 0755", p.binary)
					}

					if !strings.Contains(str(f.Contents.Source), "REPLACE-ME") || !strings.HasPrefix(str(f.Contents.Verification.Hash), "sha256-") {
						t.Fatalf("%s: want a REPLACE-ME source verified by a sha256, got %q %q", p.binary, str(f.Contents.Source), str(f.Contents.Verification.Hash))
					}
				})

				t.Run("config", func(t *testing.T) { checkConfig(t, cfg) })

				t.Run("units", func(t *testing.T) {
					socket := unit(cfg, "extractedprism.socket")
					if socket == nil || socket.Enabled == nil || !*socket.Enabled {
						t.Fatal("extractedprism.socket is not enabled")
					}

					if str(socket.Contents) != repoFile(t, "systemd/extractedprism.socket") {
						t.Error("extractedprism.socket differs from systemd/extractedprism.socket")
					}

					health := unit(cfg, "extractedprism-health.socket")
					if health == nil || health.Enabled == nil || !*health.Enabled {
						t.Fatal("extractedprism-health.socket is not enabled: the health port could be taken at boot")
					}

					if str(health.Contents) != repoFile(t, "systemd/extractedprism-health.socket") {
						t.Error("extractedprism-health.socket differs from systemd/extractedprism-health.socket")
					}

					service := unit(cfg, "extractedprism.service")
					if service == nil || str(service.Contents) != repoFile(t, "systemd/extractedprism.service") {
						t.Fatal("extractedprism.service is not systemd/extractedprism.service verbatim")
					}

					if service.Enabled != nil && *service.Enabled {
						t.Error("extractedprism.service is enabled: the socket starts it")
					}

					bin := dropin(service, "10-binary-path.conf")
					if bin == nil || !strings.Contains(str(bin.Contents), "\nExecStart=\nExecStart="+p.binary+" run\n") {
						t.Errorf("no drop-in resetting ExecStart to %s run", p.binary)
					}

					for _, w := range []string{"extractedprism-kubelet-wiring.service", "extractedprism-kubelet-wiring.path"} {
						u := unit(cfg, w)
						want := strings.ReplaceAll(repoFile(t, "packaging/kubelet/"+w), "/usr/local/sbin/extractedprism-kubelet-wiring", p.wiringPath)

						if u == nil || u.Enabled == nil || !*u.Enabled || str(u.Contents) != want {
							t.Errorf("%s: want packaging/kubelet/%s, enabled, running %s", w, w, p.wiringPath)
						}
					}

					script := file(cfg, p.wiringPath)
					if script == nil || mode(script) != 0o755 || contents(t, *script) != repoFile(t, "packaging/kubelet/extractedprism-kubelet-wiring") {
						t.Errorf("%s: want packaging/kubelet/extractedprism-kubelet-wiring with mode 0755", p.wiringPath)
					}
				})

				// The socket always (inert until the address exists); the
				// oneshot that puts the address on the node only when its
				// OPTIONAL block is uncommented, run from p.binary.
				t.Run("link-local", func(t *testing.T) {
					socket, service := unit(cfg, "extractedprism-link-local.socket"), unit(cfg, "extractedprism-link-local.service")

					if socket == nil || socket.Enabled == nil || !*socket.Enabled || str(socket.Contents) != repoFile(t, "systemd/extractedprism-link-local.socket") {
						t.Error("extractedprism-link-local.socket: want systemd/extractedprism-link-local.socket verbatim, enabled")
					}

					if !withCredentials {
						if service != nil {
							t.Fatal("the link-local address must be optional (commented out)")
						}

						return
					}

					if service == nil || service.Enabled == nil || !*service.Enabled || str(service.Contents) != repoFile(t, "systemd/extractedprism-link-local.service") {
						t.Fatal("extractedprism-link-local.service: want systemd/extractedprism-link-local.service verbatim, enabled")
					}

					bin := dropin(service, "10-binary-path.conf")
					if bin == nil || !strings.Contains(str(bin.Contents), "\nExecStart=\nExecStart="+p.binary+" link-local --address 169.254.7.45\n") {
						t.Errorf("no drop-in resetting ExecStart to %s link-local", p.binary)
					}
				})

				t.Run("discovery credentials", func(t *testing.T) {
					kubeconfig := file(cfg, "/etc/extractedprism/kubeconfig")
					credential := dropin(unit(cfg, "extractedprism.service"), "kubeconfig.conf")

					if !withCredentials {
						if kubeconfig != nil || credential != nil {
							t.Fatal("the discovery credentials must be optional (commented out)")
						}

						return
					}

					if mode(kubeconfig) != 0o600 {
						t.Errorf("/etc/extractedprism/kubeconfig: mode %o, want 0600", mode(kubeconfig))
					}

					if credential == nil || str(credential.Contents) != repoFile(t, "packaging/systemd/kubeconfig.conf") {
						t.Error("the kubeconfig.conf drop-in must be packaging/systemd/kubeconfig.conf verbatim")
					}
				})

				// The units as Ignition writes them (/etc/systemd/system and
				// its drop-in directories), checked by systemd-analyze verify,
				// which prints nothing when all is well.
				t.Run("systemd-analyze verify", func(t *testing.T) {
					sysroot := t.TempDir()
					write := func(path, data string, perm os.FileMode) {
						full := filepath.Join(sysroot, path)
						if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
							t.Fatal(err)
						}

						if err := os.WriteFile(full, []byte(data), perm); err != nil {
							t.Fatal(err)
						}
					}

					run(t, "mkdir", "-p", filepath.Join(sysroot, "usr/lib/systemd"), filepath.Join(sysroot, "usr/bin"))
					run(t, "cp", "-a", "/usr/lib/systemd/system", filepath.Join(sysroot, "usr/lib/systemd/"))
					run(t, "ln", "-s", "usr/bin", filepath.Join(sysroot, "bin"))
					run(t, "cp", "/bin/sh", filepath.Join(sysroot, "usr/bin/sh"))

					bin, err := os.ReadFile(binary(t))
					if err != nil {
						t.Fatal(err)
					}

					write(p.binary, string(bin), 0o755)

					var names []string

					for _, u := range cfg.Systemd.Units {
						write("etc/systemd/system/"+u.Name, str(u.Contents), 0o644)
						names = append(names, u.Name)

						for _, d := range u.Dropins {
							write("etc/systemd/system/"+u.Name+".d/"+d.Name, str(d.Contents), 0o644)
						}
					}

					for _, f := range cfg.Storage.Files {
						if f.Contents.Source != nil && strings.HasPrefix(*f.Contents.Source, "data:") {
							write(f.Path, contents(t, f), os.FileMode(mode(&f)))
						}
					}

					run(t, "systemd-analyze", append([]string{"verify", "--root=" + sysroot}, names...)...)
				})
			})
		}
	}
}

// fcos-repo.bu installs from the signed rpm repository instead of fetching
// the binary: the client file of packaging/repo verbatim, the key at the
// path it names, the configuration before the package, and a first-boot
// unit that layers the package with rpm-ostree and starts its socket.
// (rpm-ostree itself is not run here: there is no Fedora CoreOS.)
func TestButaneFromRepository(t *testing.T) {
	p := platform{
		file: "packaging/butane/fcos-repo.bu", ignition: "3.5.0",
		parse: func(b []byte) (report.Report, error) {
			_, r, err := v35.Parse(b)

			return r, err
		},
		wiringPath: "/usr/local/sbin/extractedprism-kubelet-wiring",
	}
	text := repoFile(t, p.file)

	// Discovery credentials (two blocks) and the link-local address.
	optional, n, err := uncommentOptional(text)
	if err != nil || n != 3 {
		t.Fatalf("%s: optional blocks: %d, %v", p.file, n, err)
	}

	for name, input := range map[string]string{"fcos-repo.bu": text, "fcos-repo.bu+optional": optional} {
		t.Run(name, func(t *testing.T) {
			cfg, _ := translate(t, p, input)

			repo := file(cfg, "/etc/yum.repos.d/extractedprism.repo")
			if repo == nil || mode(repo) != 0o644 || contents(t, *repo) != repoFile(t, "packaging/repo/extractedprism.repo") {
				t.Error("/etc/yum.repos.d/extractedprism.repo: want packaging/repo/extractedprism.repo verbatim, 0644")
			}

			key := file(cfg, "/etc/pki/rpm-gpg/RPM-GPG-KEY-extractedprism")
			if key == nil || !strings.HasPrefix(contents(t, *key), "-----BEGIN PGP PUBLIC KEY BLOCK-----\n") ||
				!strings.Contains(contents(t, *key), "REPLACE-ME") {
				t.Error("the key: want an armoured placeholder marked REPLACE-ME at the .repo file's gpgkey path")
			}

			if file(cfg, "/usr/local/bin/extractedprism") != nil || unit(cfg, "extractedprism.socket") != nil {
				t.Error("the binary or the units are written besides the package")
			}

			install := unit(cfg, "extractedprism-install.service")
			if install == nil || install.Enabled == nil || !*install.Enabled {
				t.Fatal("extractedprism-install.service: want it enabled")
			}

			for _, want := range []string{
				"\nExecStart=/usr/bin/rpm-ostree install --apply-live --allow-inactive --idempotent extractedprism\n",
				"\nExecStart=/usr/bin/systemctl enable --now extractedprism.socket\n",
				"\nAfter=network-online.target\n", "\nBefore=kubelet.service zincati.service\n",
			} {
				if !strings.Contains(str(install.Contents), want) {
					t.Errorf("extractedprism-install.service lacks %q", strings.TrimSpace(want))
				}
			}

			// The link-local switch: the package's oneshot, enabled only
			// when its OPTIONAL block is uncommented.
			if on := strings.Contains(str(install.Contents), "\nExecStart=/usr/bin/systemctl enable --now extractedprism-link-local.service\n"); on != strings.HasSuffix(name, "+optional") {
				t.Errorf("link-local address switched on: %v, want %v", on, !on)
			}

			checkConfig(t, cfg)

			credential := dropin(unitOrEmpty(cfg, "extractedprism.service"), "kubeconfig.conf")
			if kubeconfig := file(cfg, "/etc/extractedprism/kubeconfig"); strings.HasSuffix(name, "+optional") {
				if mode(kubeconfig) != 0o600 || credential == nil ||
					str(credential.Contents) != repoFile(t, "packaging/systemd/kubeconfig.conf") {
					t.Error("optional: want the kubeconfig 0600 and packaging/systemd/kubeconfig.conf as a drop-in")
				}
			} else if kubeconfig != nil || credential != nil {
				t.Error("the discovery credentials must be optional (commented out)")
			}
		})
	}
}

// checkConfig: /etc/extractedprism/config.toml is written 0644 and the
// daemon's own check-config accepts it.
func checkConfig(t *testing.T, cfg types.Config) {
	t.Helper()

	f := file(cfg, "/etc/extractedprism/config.toml")
	if f == nil || mode(f) != 0o644 {
		t.Fatal("/etc/extractedprism/config.toml: want a file with mode 0644")
	}

	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(contents(t, *f)), 0o644); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if out, err := exec.CommandContext(ctx, binary(t), "check-config", "--config", path).CombinedOutput(); err != nil {
		t.Fatalf("extractedprism check-config: %v\n%s", err, out)
	}
}

func unitOrEmpty(cfg types.Config, name string) *types.Unit {
	if u := unit(cfg, name); u != nil {
		return u
	}

	return &types.Unit{}
}
