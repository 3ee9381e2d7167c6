//go:build provisioning

package provisioning

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
)

// renderedChart returns the chart renderings run.sh made with helm, by
// name: default.yaml (only endpoints set) and full.yaml
// (testdata/chart-values-full.yaml).
func renderedChart(t *testing.T) map[string]string {
	t.Helper()

	dir := os.Getenv("EP_RENDERED_CHART_DIR")
	if dir == "" {
		t.Fatal("EP_RENDERED_CHART_DIR is not set: run test/provisioning/run.sh")
	}

	out := map[string]string{}

	for _, name := range []string{"default.yaml", "full.yaml"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}

		out[name] = string(data)
	}

	return out
}

func byKind(docs []map[string]any, kind string) []map[string]any {
	var out []map[string]any

	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}

	return out
}

func one(t *testing.T, docs []map[string]any, kind string) map[string]any {
	t.Helper()

	found := byKind(docs, kind)
	if len(found) != 1 {
		t.Fatalf("%d objects of kind %s, want 1", len(found), kind)
	}

	return found[0]
}

func expect(t *testing.T, obj any, want any, path ...any) {
	t.Helper()

	got, ok := get(obj, path...)
	if !ok {
		t.Errorf("%v: missing, want %s", path, jsonString(want))

		return
	}

	if !reflect.DeepEqual(normalize(got), normalize(want)) {
		t.Errorf("%v: %s, want %s", path, jsonString(got), jsonString(want))
	}
}

// normalize makes Go literals comparable with decoded YAML (numbers are
// float64 there).
func normalize(v any) any {
	var out any

	_ = json.Unmarshal([]byte(jsonString(v)), &out)

	return out
}

// podUID is the proxy pod's user and group: its own, not the host's nobody
// (65534), which other services on the node run as.
const podUID = 60745

// checkNodeProxyPod checks what every flavour of the proxy pod must have:
// host network, a loopback readiness probe on the health port and no
// liveness probe (the daemon's own watchdog ends a stalled process; a
// probe could be answered by whatever holds the port), the non-root
// read-only sandbox under its own UID, no CPU limit, the image's own
// entrypoint, and a writable state directory.
func checkNodeProxyPod(t *testing.T, podSpec map[string]any) {
	t.Helper()
	checkNodeProxyPodOn(t, podSpec, 7446, false)
}

// checkNodeProxyPodOn is checkNodeProxyPod for a health port and, when
// liveness, an httpGet liveness probe on /healthz.
func checkNodeProxyPodOn(t *testing.T, podSpec map[string]any, healthPort int, liveness bool) {
	t.Helper()

	expect(t, podSpec, true, "hostNetwork")
	expect(t, podSpec, "system-node-critical", "priorityClassName")
	expect(t, podSpec, "RuntimeDefault", "securityContext", "seccompProfile", "type")

	containers, _ := podSpec["containers"].([]any)
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}

	c := containers[0].(map[string]any)

	if !strings.HasPrefix(c["image"].(string), "ghcr.io/lexfrei/extractedprism:") {
		t.Errorf("image %v", c["image"])
	}

	if c["command"] != nil || c["args"] != nil {
		t.Errorf("command/args override the image's /extractedprism run: %v %v", c["command"], c["args"])
	}

	expect(t, c, map[string]any{"host": "127.0.0.1", "path": "/readyz", "port": healthPort}, "readinessProbe", "httpGet")

	if liveness {
		expect(t, c, map[string]any{"host": "127.0.0.1", "path": "/healthz", "port": healthPort}, "livenessProbe", "httpGet")
	} else if c["livenessProbe"] != nil {
		t.Errorf("a liveness probe on the health port, which any process on the node could answer: %v", c["livenessProbe"])
	}

	if cpu, ok := get(c, "resources", "limits", "cpu"); ok {
		t.Errorf("a CPU limit (%v) on the path that carries all of a node's API traffic", cpu)
	}

	expect(t, c, true, "securityContext", "runAsNonRoot")
	expect(t, c, podUID, "securityContext", "runAsUser")
	expect(t, c, podUID, "securityContext", "runAsGroup")
	expect(t, c, true, "securityContext", "readOnlyRootFilesystem")
	expect(t, c, false, "securityContext", "allowPrivilegeEscalation")
	expect(t, c, []any{"ALL"}, "securityContext", "capabilities", "drop")

	stateVolume := ""

	mounts, _ := c["volumeMounts"].([]any)
	for _, m := range mounts {
		if mm := m.(map[string]any); mm["mountPath"] == "/var/lib/extractedprism" {
			stateVolume, _ = mm["name"].(string)
		}
	}

	found := false

	volumes, _ := podSpec["volumes"].([]any)
	for _, v := range volumes {
		if vv := v.(map[string]any); vv["name"] == stateVolume {
			_, found = vv["emptyDir"]
		}
	}

	if !found {
		t.Error("state_directory /var/lib/extractedprism is not an emptyDir mount: the root filesystem is read-only")
	}

	// The EP_* variables, as the daemon loads them, with no config file.
	env := map[string]string{}

	vars, _ := c["env"].([]any)
	for _, e := range vars {
		ev := e.(map[string]any)
		if name := ev["name"].(string); strings.HasPrefix(name, "EP_") {
			env[name], _ = ev["value"].(string)
		}
	}

	if env["EP_ENDPOINTS"] == "" {
		t.Error("no EP_ENDPOINTS")
	}

	checkConfig(t, "", env)
}

// containerEnv is the first container's env, by name (values only).
func containerEnv(t *testing.T, podSpec map[string]any) map[string]string {
	t.Helper()

	env := map[string]string{}

	vars, _ := mustGet(t, podSpec, "containers", 0, "env").([]any)
	for _, e := range vars {
		ev := e.(map[string]any)
		env[ev["name"].(string)], _ = ev["value"].(string)
	}

	return env
}

func podSpecOf(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()

	if obj["kind"] == "Pod" {
		return mustGet(t, obj, "spec").(map[string]any)
	}

	return mustGet(t, obj, "spec", "template", "spec").(map[string]any)
}

func TestDaemonSetManifest(t *testing.T) {
	for name, text := range variants(t, "packaging/kubernetes/daemonset.yaml") {
		t.Run(name, func(t *testing.T) {
			docs := yamlDocs(t, name, text)
			ds := one(t, docs, "DaemonSet")

			expect(t, ds, "kube-system", "metadata", "namespace")
			// A surge update: the new pod serves next to the old one first.
			expect(t, ds, map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxSurge": 1, "maxUnavailable": 0}}, "spec", "updateStrategy")

			spec := podSpecOf(t, ds)
			checkNodeProxyPod(t, spec)
			expect(t, spec, "ClusterFirstWithHostNet", "dnsPolicy")
			expect(t, spec, []any{map[string]any{"operator": "Exists"}}, "tolerations")

			// The link-local switch: off as shipped; uncommented, an init
			// container with NET_ADMIN only, and the proxy's address.
			if !strings.HasSuffix(name, "+optional") {
				if spec["initContainers"] != nil {
					t.Errorf("init containers as shipped: %v", spec["initContainers"])
				}
			} else {
				init := mustGet(t, spec, "initContainers", 0).(map[string]any)
				expect(t, init, []any{"link-local"}, "args")
				expect(t, init, map[string]any{"drop": []any{"ALL"}, "add": []any{"NET_ADMIN"}}, "securityContext", "capabilities")
				expect(t, init, mustGet(t, spec, "containers", 0, "image"), "image")

				found := false

				for _, e := range mustGet(t, spec, "containers", 0, "env").([]any) {
					found = found || e.(map[string]any)["name"] == "EP_LINK_LOCAL_ADDRESS"
				}

				if !found {
					t.Error("the proxy is not given the link-local address")
				}
			}

			// The ServiceAccount and its Role binding come from rbac.yaml.
			rbac := yamlDocs(t, "rbac.yaml", repoFile(t, "packaging/kubernetes/rbac.yaml"))
			sa := one(t, rbac, "ServiceAccount")
			expect(t, spec, mustGet(t, sa, "metadata", "name"), "serviceAccountName")
			expect(t, sa, "kube-system", "metadata", "namespace")
			expect(t, one(t, rbac, "RoleBinding"), []any{map[string]any{"kind": "ServiceAccount", "name": "extractedprism", "namespace": "kube-system"}}, "subjects")
		})
	}
}

func TestStaticPodManifest(t *testing.T) {
	for name, text := range variants(t, "packaging/kubernetes/static-pod.yaml") {
		t.Run(name, func(t *testing.T) {
			pod := one(t, yamlDocs(t, name, text), "Pod")
			expect(t, pod, "kube-system", "metadata", "namespace")

			spec := podSpecOf(t, pod)
			checkNodeProxyPod(t, spec)
			// Cluster DNS cannot work before this proxy does.
			expect(t, spec, "Default", "dnsPolicy")
			expect(t, spec, false, "automountServiceAccountToken")

			if spec["serviceAccountName"] != nil {
				t.Error("a static pod cannot use a service account")
			}
		})
	}
}

func TestChartRendering(t *testing.T) {
	rendered := renderedChart(t)

	t.Run("default", func(t *testing.T) {
		docs := yamlDocs(t, "default.yaml", rendered["default.yaml"])
		ds := one(t, docs, "DaemonSet")
		spec := podSpecOf(t, ds)
		checkNodeProxyPod(t, spec)
		expect(t, spec, "ClusterFirstWithHostNet", "dnsPolicy")
		expect(t, spec, []any{map[string]any{"operator": "Exists"}}, "tolerations")
		expect(t, spec, true, "automountServiceAccountToken")
		// A surge update: the new pod serves next to the old one first.
		expect(t, ds, map[string]any{"type": "RollingUpdate", "rollingUpdate": map[string]any{"maxUnavailable": 0, "maxSurge": 1}}, "spec", "updateStrategy")

		if spec["initContainers"] != nil {
			t.Errorf("init containers by default: %v", spec["initContainers"])
		}

		if _, set := containerEnv(t, spec)["EP_LINK_LOCAL_ADDRESS"]; set {
			t.Error("the link-local address is set by default")
		}
		expect(t, ds, 10, "spec", "minReadySeconds")

		// The daemon's own defaults, not the original chart's 20 s / 15 s.
		env := containerEnv(t, spec)
		def := config.Default()

		for name, want := range map[string]string{"EP_HEALTH_INTERVAL": def.HealthInterval.String(), "EP_HEALTH_TIMEOUT": def.HealthTimeout.String()} {
			if got, err := time.ParseDuration(env[name]); err != nil || got.String() != want {
				t.Errorf("%s = %q, want the daemon's default %s", name, env[name], want)
			}
		}
		expect(t, spec, "ghcr.io/lexfrei/extractedprism:0.1.0", "containers", 0, "image")

		sa := one(t, docs, "ServiceAccount")
		expect(t, spec, mustGet(t, sa, "metadata", "name"), "serviceAccountName")

		role := one(t, docs, "Role")
		expect(t, role, "default", "metadata", "namespace")
		expect(t, role, repoRoleRules(t), "rules")
		expect(t, one(t, docs, "RoleBinding"), []any{map[string]any{
			"kind": "ServiceAccount", "name": mustGet(t, sa, "metadata", "name"), "namespace": mustGet(t, sa, "metadata", "namespace"),
		}}, "subjects")
	})

	t.Run("full", func(t *testing.T) {
		docs := yamlDocs(t, "full.yaml", rendered["full.yaml"])
		if len(byKind(docs, "Role")) != 0 || len(byKind(docs, "RoleBinding")) != 0 || len(byKind(docs, "ServiceAccount")) != 0 {
			t.Error("RBAC or ServiceAccount rendered with enableDiscovery=false and serviceAccount.create=false")
		}

		ds := one(t, docs, "DaemonSet")
		spec := podSpecOf(t, ds)
		// healthPort moves both probes; a liveness probe without a port gets it.
		checkNodeProxyPodOn(t, spec, 9446, true)
		expect(t, containerEnv(t, spec)["EP_BIND_ADDRESS"], "0.0.0.0")
		// Still mounted: its CA verifies the https health checks.
		expect(t, spec, true, "automountServiceAccountToken")
		expect(t, spec, "custom-sa", "serviceAccountName")
		expect(t, ds, map[string]any{"type": "OnDelete"}, "spec", "updateStrategy")
		expect(t, spec, "ghcr.io/lexfrei/extractedprism:9.9.9", "containers", 0, "image")
		expect(t, ds, "yes", "spec", "template", "metadata", "labels", "example.com/label")
		expect(t, ds, "yes", "spec", "template", "metadata", "annotations", "example.com/annotation")
		expect(t, spec, []any{map[string]any{"name": "registry-credentials"}}, "imagePullSecrets")
		expect(t, spec, map[string]any{"kubernetes.io/os": "linux"}, "nodeSelector")

		// linkLocal.enabled: an init container with NET_ADMIN and nothing
		// else puts the address on the node; the proxy serves it too.
		init := mustGet(t, spec, "initContainers", 0).(map[string]any)
		expect(t, init, []any{"link-local"}, "args")
		expect(t, init, []any{map[string]any{"name": "EP_LINK_LOCAL_ADDRESS", "value": "169.254.7.46"}}, "env")
		expect(t, init, map[string]any{"drop": []any{"ALL"}, "add": []any{"NET_ADMIN"}}, "securityContext", "capabilities")
		expect(t, init, false, "securityContext", "allowPrivilegeEscalation")
		expect(t, init, mustGet(t, spec, "containers", 0, "image"), "image")
		expect(t, containerEnv(t, spec)["EP_LINK_LOCAL_ADDRESS"], "169.254.7.46")
	})
}

// repoRoleRules are the rules of the shipped rbac.yaml, which the chart's
// Role must grant, no more.
func repoRoleRules(t *testing.T) any {
	t.Helper()

	return mustGet(t, one(t, yamlDocs(t, "rbac.yaml", repoFile(t, "packaging/kubernetes/rbac.yaml")), "Role"), "rules")
}
