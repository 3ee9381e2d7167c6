package discovery

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// caPEM is a fresh self-signed CA certificate.
func caPEM(t *testing.T) []byte {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}

	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()

	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}

	return p
}

// kubeconfig writes a kubeconfig for server with a token; ca is a line
// naming its CA ("" for none).
func kubeconfig(t *testing.T, dir, server, ca string) string {
	t.Helper()

	return writeFile(t, dir, "kubeconfig", []byte(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: `+server+`
    `+ca+`
users:
- name: u
  user:
    token: secret-token
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`))
}

// notInCluster makes rest.InClusterConfig see no cluster, whatever the
// machine running the test is.
func notInCluster(t *testing.T) {
	t.Helper()
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
}

func TestCredentials(t *testing.T) {
	notInCluster(t)

	dir := t.TempDir()
	path := kubeconfig(t, dir, "https://10.0.0.1:6443", "")

	t.Run("the kubeconfig setting", func(t *testing.T) {
		t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir()) // ignored when the setting names one

		cfg, from, err := Credentials(path)
		if err != nil || cfg.Host != "https://10.0.0.1:6443" || cfg.BearerToken != "secret-token" || from != "kubeconfig "+path {
			t.Fatalf("Credentials(%s) = %+v, %q, %v", path, cfg, from, err)
		}
	})

	t.Run("systemd's LoadCredential", func(t *testing.T) {
		creds := t.TempDir()
		kubeconfig(t, creds, "https://10.0.0.2:6443", "")
		t.Setenv("CREDENTIALS_DIRECTORY", creds)

		cfg, from, err := Credentials("")
		if err != nil || cfg.Host != "https://10.0.0.2:6443" || from != "kubeconfig "+filepath.Join(creds, "kubeconfig") {
			t.Fatalf("Credentials() = %+v, %q, %v", cfg, from, err)
		}
	})

	t.Run("none at all", func(t *testing.T) {
		t.Setenv("CREDENTIALS_DIRECTORY", t.TempDir()) // without a kubeconfig in it

		if cfg, _, err := Credentials(""); !errors.Is(err, ErrNoCredentials) {
			t.Fatalf("Credentials() = %+v, %v; want ErrNoCredentials", cfg, err)
		}
	})

	for name, content := range map[string]string{
		"missing":       "",
		"not a config":  "clusters: [[[",
		"no server":     "apiVersion: v1\nkind: Config\n",
		"a bad context": "apiVersion: v1\nkind: Config\ncurrent-context: nowhere\n",
	} {
		t.Run("kubeconfig "+name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "kubeconfig")
			if content != "" {
				writeFile(t, filepath.Dir(p), "kubeconfig", []byte(content))
			}

			_, _, err := Credentials(p)
			if err == nil || errors.Is(err, ErrNoCredentials) || !strings.Contains(err.Error(), p) {
				t.Fatalf("Credentials(%s) error %v; want one naming the file", name, err)
			}
		})
	}

	t.Run("in a pod without its token", func(t *testing.T) {
		t.Setenv("CREDENTIALS_DIRECTORY", "")
		t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
		t.Setenv("KUBERNETES_SERVICE_PORT", "443")

		if _, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token"); err == nil {
			t.Fatal("this machine has a service account token; the case cannot be produced here")
		}

		_, _, err := Credentials("")
		if err == nil || errors.Is(err, ErrNoCredentials) || !strings.HasPrefix(err.Error(), "in-cluster credentials: ") {
			t.Fatalf("Credentials() error %v; want the in-cluster failure, not 'no credentials'", err)
		}
	})
}

// The client goes through the proxy with the kubeconfig's credentials and
// CA, checking the certificate against the configured name; the original
// config is left alone.
func TestThroughProxy(t *testing.T) {
	t.Parallel()

	orig := &rest.Config{
		Host: "https://10.96.0.1:443", APIPath: "/api", BearerToken: "t",
		TLSClientConfig: rest.TLSClientConfig{CAData: []byte("ca")},
	}

	c := ThroughProxy(orig, "127.0.0.1:7445", "kubernetes.default.svc")
	if c.Host != "https://127.0.0.1:7445" || c.APIPath != "" || c.TLSClientConfig.ServerName != "kubernetes.default.svc" ||
		c.BearerToken != "t" || string(c.TLSClientConfig.CAData) != "ca" {
		t.Fatalf("ThroughProxy = %+v", c)
	}

	if orig.Host != "https://10.96.0.1:443" || orig.TLSClientConfig.ServerName != "" {
		t.Fatalf("the original config changed: %+v", orig)
	}

	if c := ThroughProxy(orig, "[::1]:7445", "k"); c.Host != "https://[::1]:7445" {
		t.Fatalf("IPv6 proxy address: host %q", c.Host)
	}
}

func TestNewClientRejectsABadTLSConfig(t *testing.T) {
	t.Parallel()

	_, err := NewClient(&rest.Config{Host: "https://127.0.0.1:1", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("not a certificate")}})
	if err == nil || !strings.Contains(err.Error(), "API client for discovery.k8s.io/v1") {
		t.Fatalf("NewClient with a garbage CA: %v; want an error naming the client", err)
	}
}

func TestCAPool(t *testing.T) {
	notInCluster(t)
	t.Setenv("CREDENTIALS_DIRECTORY", "")

	dir := t.TempDir()
	ca := caPEM(t)
	caFile := writeFile(t, dir, "ca.crt", ca)
	junk := writeFile(t, dir, "junk.crt", []byte("-----BEGIN NOTHING-----\n"))

	// The in-cluster and kubeadm locations, replaced by paths of the test.
	fallback := filepath.Join(dir, "fallback", "ca.crt")
	saved := fallbackCAFiles
	fallbackCAFiles = []string{filepath.Join(dir, "absent.crt"), fallback}

	t.Cleanup(func() { fallbackCAFiles = saved })

	inline := kubeconfig(t, t.TempDir(), "https://10.0.0.1:6443",
		"certificate-authority-data: "+base64.StdEncoding.EncodeToString(ca))
	byFile := kubeconfig(t, t.TempDir(), "https://10.0.0.1:6443", "certificate-authority: "+caFile)
	without := kubeconfig(t, t.TempDir(), "https://10.0.0.1:6443", "")

	for _, tc := range []struct {
		name, caFile, kubeconfig string
		fallback                 bool   // the fallback CA exists
		from                     string // where it must be found; "" for an error
		err                      string
	}{
		{name: "health_ca_file", caFile: caFile, kubeconfig: inline, from: caFile},
		{name: "health_ca_file missing", caFile: filepath.Join(dir, "nope.crt"), err: "health CA: "},
		{name: "health_ca_file without a certificate", caFile: junk, err: "no certificate in it"},
		{name: "the kubeconfig's inline CA", kubeconfig: inline, from: "kubeconfig " + inline},
		{name: "the kubeconfig's CA file", kubeconfig: byFile, from: caFile},
		{name: "a kubeconfig without a CA falls back", kubeconfig: without, fallback: true, from: fallback},
		{name: "an unreadable kubeconfig falls back", kubeconfig: filepath.Join(dir, "none"), fallback: true, from: fallback},
		{name: "nothing anywhere", kubeconfig: without, err: ErrNoCA.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_ = os.RemoveAll(filepath.Dir(fallback))

			if tc.fallback {
				if err := os.MkdirAll(filepath.Dir(fallback), 0o700); err != nil {
					t.Fatal(err)
				}

				writeFile(t, filepath.Dir(fallback), "ca.crt", ca)
			}

			pool, from, err := CAPool(tc.caFile, tc.kubeconfig)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("CAPool = %q, %v; want an error with %q", from, err, tc.err)
				}

				return
			}

			if err != nil || pool == nil || from != tc.from {
				t.Fatalf("CAPool = %v, %q, %v; want a pool from %q", pool, from, err, tc.from)
			}
		})
	}
}
