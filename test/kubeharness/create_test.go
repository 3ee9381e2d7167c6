package kubeharness

import (
	"strings"
	"testing"
)

func TestSplitManifestAndPaths(t *testing.T) {
	manifest := `
# leading comment
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: r
  namespace: "ns1" # trailing comment
  labels:
    namespace: not-this-one
rules: []
--- # second
apiVersion: v1
kind: Namespace
metadata:
  name: ns1
---
`

	docs, ct := splitManifest([]byte(manifest))
	if ct != "application/yaml" || len(docs) != 2 {
		t.Fatalf("got %d docs of %s", len(docs), ct)
	}

	want := []string{
		"/apis/rbac.authorization.k8s.io/v1/namespaces/ns1/roles",
		"/api/v1/namespaces",
	}

	for i, doc := range docs {
		ti, err := parseTypeInfo(doc, ct)
		if err != nil {
			t.Fatal(err)
		}

		path, err := collectionPath(ti)
		if err != nil || path != want[i] {
			t.Errorf("doc %d: path %q, %v; want %q", i, path, err, want[i])
		}
	}
}

func TestJSONManifest(t *testing.T) {
	docs, ct := splitManifest([]byte(` {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"namespace":"default"}}`))
	if ct != "application/json" || len(docs) != 1 {
		t.Fatalf("got %d docs of %s", len(docs), ct)
	}

	ti, err := parseTypeInfo(docs[0], ct)
	if err != nil {
		t.Fatal(err)
	}

	if path, _ := collectionPath(ti); path != "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices" {
		t.Errorf("path = %q", path)
	}
}

func TestPluralResource(t *testing.T) {
	for kind, want := range map[string]string{
		"Role": "roles", "ClusterRoleBinding": "clusterrolebindings", "NetworkPolicy": "networkpolicies",
		"Endpoints": "endpoints", "Ingress": "ingresses", "Gateway": "gateways", "ServiceAccount": "serviceaccounts",
	} {
		if got := pluralResource(kind); got != want {
			t.Errorf("pluralResource(%s) = %s, want %s", kind, got, want)
		}
	}
}

func TestKubeconfigYAML(t *testing.T) {
	k := Kubeconfig{Server: "https://198.51.100.1:6443", CAPEM: []byte("pem"), Token: `a"b`, User: "u", TLSServerName: "kubernetes"}
	y := k.YAML()

	for _, want := range []string{
		`    server: "https://198.51.100.1:6443"`,
		"    certificate-authority-data: cGVt",
		`    tls-server-name: "kubernetes"`,
		`    token: "a\"b"`,
		"current-context: test",
	} {
		if !strings.Contains(y, want+"\n") {
			t.Errorf("kubeconfig lacks %q:\n%s", want, y)
		}
	}

	if strings.Contains((Kubeconfig{Server: "s"}).YAML(), "tls-server-name") {
		t.Error("empty TLSServerName rendered")
	}
}

func TestKubeconfigClientCert(t *testing.T) {
	k := Kubeconfig{Server: "s", CAPEM: []byte("pem"), Token: "unused", ClientCert: &CertPair{CertFile: "/p/n.crt", KeyFile: "/p/n.key"}}
	y := k.YAML()

	for _, want := range []string{`    client-certificate: "/p/n.crt"`, `    client-key: "/p/n.key"`} {
		if !strings.Contains(y, want+"\n") {
			t.Errorf("kubeconfig lacks %q:\n%s", want, y)
		}
	}

	if strings.Contains(y, "token:") {
		t.Errorf("a certificate kubeconfig carries a token too:\n%s", y)
	}
}

func TestBinDirErrors(t *testing.T) {
	if _, err := binDir(""); err == nil || !strings.Contains(err.Error(), "hack/kube-bins/build.sh") {
		t.Errorf("unset KUBE_BINS: %v", err)
	}

	if _, err := binDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "kube-apiserver") {
		t.Errorf("empty KUBE_BINS dir: %v", err)
	}
}
