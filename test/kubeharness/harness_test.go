//go:build integration

package kubeharness_test

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/test/kubeharness"
)

const (
	a1 = kubeharness.IPv4Addr1
	a2 = kubeharness.IPv4Addr2

	slicesPath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
)

// TestSmoke checks the harness end to end: two apiservers on one etcd both
// appear in the "kubernetes" EndpointSlice, a gracefully stopped one leaves
// it promptly, token users and RBAC objects work, and compaction makes old
// watches fail with 410 Gone.
func TestSmoke(t *testing.T) {
	kubeharness.RequireNetns(t, a1, a2)

	pki := kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(a1, a2))
	etcd := kubeharness.StartEtcd(t, t.TempDir())
	opts := kubeharness.APIServerOptions{PKI: pki, NoEndpointSliceWatchCache: true}
	servers := kubeharness.StartAPIServers(t, etcd, opts, a1, a2)
	admin := pki.AdminClient(servers[0].URL())

	var initial *kubeharness.EndpointSlice

	step(t, "slice lists both", func() { initial = checkSliceListsBoth(t, admin) })
	step(t, "distinct identities", func() { checkDistinctIdentities(t, admin) })
	step(t, "least-privilege user", func() { checkLeastPrivilegeUser(t, pki, servers[1]) })
	step(t, "kubeconfig", func() { checkKubeconfig(t, pki, servers[0]) })
	step(t, "graceful stop", func() { checkGracefulStopLeavesSlice(t, admin, servers[1]) })
	step(t, "compaction", func() { checkCompaction(t, etcd, admin, initial.Metadata.ResourceVersion) })
}

// step logs how long each part took, so slow runs show where the time went.
func step(t *testing.T, name string, f func()) {
	t.Helper()

	start := time.Now()

	f()
	t.Logf("step %q took %v", name, time.Since(start).Round(time.Millisecond))
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)

	return ctx
}

func checkSliceListsBoth(t *testing.T, admin *kubeharness.Client) *kubeharness.EndpointSlice {
	t.Helper()

	s, err := admin.WaitForKubernetesSlice(ctxFor(t, 30*time.Second), a1, a2)
	if err != nil {
		t.Fatal(err)
	}

	if port, ok := s.Port("https"); !ok || port != kubeharness.DefaultAPIServerPort {
		t.Errorf("port https = %d (present %v), want %d", port, ok, kubeharness.DefaultAPIServerPort)
	}

	if s.AddressType != "IPv4" {
		t.Errorf("addressType = %q, want IPv4", s.AddressType)
	}

	t.Logf("kubernetes slice rv=%s addresses=%v", s.Metadata.ResourceVersion, s.Addresses())

	return s
}

// checkDistinctIdentities: each apiserver runs under its own host name, so
// each holds its own identity lease, as on separate control-plane nodes.
func checkDistinctIdentities(t *testing.T, admin *kubeharness.Client) {
	t.Helper()

	const path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases" +
		"?labelSelector=apiserver.kubernetes.io%2Fidentity%3Dkube-apiserver"

	var hosts []string

	err := kubeharness.Poll(ctxFor(t, 15*time.Second), 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		var leases struct {
			Items []struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			} `json:"items"`
		}

		if err := admin.GetJSON(ctx, path, &leases); err != nil {
			return false, err.Error(), nil
		}

		hosts = hosts[:0]
		for _, l := range leases.Items {
			hosts = append(hosts, l.Metadata.Labels["kubernetes.io/hostname"])
		}

		slices.Sort(hosts)

		return len(slices.Compact(slices.Clone(hosts))) == 2, fmt.Sprintf("identity lease hosts %v", hosts), nil
	})
	if err != nil {
		t.Fatalf("want two apiserver identity leases: %v", err)
	}

	t.Logf("apiserver identities on hosts %v", hosts)
}

const readSlicesRBAC = `
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: extractedprism-read-slices
  namespace: default
rules:
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  resourceNames: ["kubernetes"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: extractedprism-read-slices
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: extractedprism-read-slices
subjects:
- kind: Group
  apiGroup: rbac.authorization.k8s.io
  name: extractedprism:nodes
`

// checkLeastPrivilegeUser: the Node token is forbidden until a Role grants
// it exactly "get" on the kubernetes slice. It asks the other apiserver than
// the one the RBAC objects were created through, which also shows both serve
// the same etcd.
func checkLeastPrivilegeUser(t *testing.T, pki *kubeharness.PKI, other *kubeharness.APIServer) {
	t.Helper()

	node := pki.Client(other.URL(), pki.Node, "")
	ctx := ctxFor(t, 30*time.Second)

	if _, err := node.KubernetesEndpointSlice(ctx); !kubeharness.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("node user before RBAC: err = %v, want 403", err)
	}

	if err := pki.AdminClient(other.URL()).Create(ctx, []byte(readSlicesRBAC)); err != nil {
		t.Fatal(err)
	}

	// RBAC reaches the authorizer through an informer, so allow it a moment.
	err := kubeharness.Poll(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		_, err := node.KubernetesEndpointSlice(ctx)
		if err == nil {
			return true, "", nil
		}

		return false, err.Error(), nil
	})
	if err != nil {
		t.Fatalf("node user after RBAC: %v", err)
	}

	if _, err := node.Do(ctx, http.MethodGet, slicesPath, "", nil); !kubeharness.IsStatus(err, http.StatusForbidden) {
		t.Errorf("node user listing slices: err = %v, want 403 (Role grants get on one name only)", err)
	}
}

// checkKubeconfig validates the written kubeconfig with kubectl (built with
// the apiserver by hack/kube-bins): the kubeconfig is plain text generated
// without client-go, so a real consumer is the only meaningful check.
func checkKubeconfig(t *testing.T, pki *kubeharness.PKI, a *kubeharness.APIServer) {
	t.Helper()

	kubectl := kubeharness.Kubectl(t)

	path := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := pki.UserKubeconfig(path, a.URL(), pki.Admin, "kubernetes.default.svc"); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctxFor(t, 30*time.Second), kubectl, "--kubeconfig", path,
		"get", "endpointslice", "-n", "default", "kubernetes", "-o", "jsonpath={.endpoints[*].addresses[*]}")

	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl with admin kubeconfig: %v\n%s", err, exitStderr(err))
	}

	if got := strings.Fields(string(out)); !slices.Contains(got, a.IP) {
		t.Fatalf("kubectl via the kubeconfig listed %q, want %s among them", out, a.IP)
	}

	t.Logf("kubectl via kubeconfig (tls-server-name=kubernetes.default.svc): %s", out)
}

func exitStderr(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}

	return nil
}

func checkGracefulStopLeavesSlice(t *testing.T, admin *kubeharness.Client, a *kubeharness.APIServer) {
	t.Helper()

	start := time.Now()
	if err := a.Terminate(); err != nil {
		t.Fatal(err)
	}

	if _, err := admin.WaitForKubernetesSlice(ctxFor(t, 5*time.Second), a1); err != nil {
		t.Fatalf("%s still in the slice 5 s after SIGTERM: %v", a.IP, err)
	}

	t.Logf("%s left the slice %v after SIGTERM", a.IP, time.Since(start).Round(time.Millisecond))

	if err := a.Wait(30 * time.Second); err != nil {
		t.Fatal(err)
	}

	t.Logf("%s exited %v after SIGTERM", a.IP, time.Since(start).Round(time.Millisecond))
}

func checkCompaction(t *testing.T, etcd *kubeharness.Etcd, admin *kubeharness.Client, oldRV string) {
	t.Helper()

	ctx := ctxFor(t, 30*time.Second)

	rev, err := etcd.Compact(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Logf("compacted etcd at revision %d; watching from rv=%s", rev, oldRV)

	events, err := admin.WatchFor(ctx, slicesPath, oldRV, 1, "metadata.name=kubernetes")
	if err != nil && !kubeharness.IsStatus(err, http.StatusGone) {
		t.Fatal(err)
	}

	codes := make([]int, 0, len(events))
	for _, ev := range events {
		codes = append(codes, ev.StatusCode())
	}

	t.Logf("watch from compacted rv: err=%v events=%d status codes=%v", err, len(events), codes)

	if err == nil && !slices.Contains(codes, http.StatusGone) {
		t.Errorf("watch from rv %s after compaction at %d: no 410 Gone (events: %d)", oldRV, rev, len(events))
	}
}
