package kubeharness

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestDefaultSANsWithout(t *testing.T) {
	s := DefaultSANs("198.51.100.1", "api.example", "198.51.100.1").Without("127.0.0.1", "localhost")

	if slices.Contains(s.IPs, "127.0.0.1") || slices.Contains(s.DNSNames, "localhost") {
		t.Errorf("Without did not drop names: %+v", s)
	}

	if !slices.Contains(s.IPs, "198.51.100.1") || !slices.Contains(s.DNSNames, "api.example") {
		t.Errorf("With lost names: %+v", s)
	}

	if n := len(DefaultSANs("198.51.100.1", "198.51.100.1").IPs); n != 3 {
		t.Errorf("duplicate IP added: %d IPs", n)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}

	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}

	return c
}

func TestPKICertificates(t *testing.T) {
	p := NewPKI(t, t.TempDir(), DefaultSANs("198.51.100.1"))
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(p.CAPEM)

	serving := readCert(t, p.Serving.CertFile)
	for _, name := range []string{"127.0.0.1", "198.51.100.1", "kubernetes.default.svc", "localhost"} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("serving cert for %s: %v", name, err)
		}
	}

	admin := readCert(t, p.AdminCert.CertFile)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin client cert: %v", err)
	}

	if !slices.Equal(admin.Subject.Organization, []string{"system:masters"}) {
		t.Errorf("admin cert O = %v", admin.Subject.Organization)
	}

	if _, err := tls.LoadX509KeyPair(p.Serving.CertFile, p.Serving.KeyFile); err != nil {
		t.Errorf("serving key pair: %v", err)
	}
}

// kubeadm's key type, so handshakes cost what they cost in a real cluster.
func TestPKIRSAKeys(t *testing.T) {
	p := NewPKIWith(t, t.TempDir(), DefaultSANs("198.51.100.1"), PKIOptions{RSA: true})

	client, err := p.IssueClientCert("node", "extractedprism:node", "extractedprism:nodes")
	if err != nil {
		t.Fatal(err)
	}

	for _, pair := range []CertPair{p.Serving, p.AdminCert, client} {
		kp, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
		if err != nil {
			t.Fatalf("%s: %v", pair.CertFile, err)
		}

		if k, ok := kp.PrivateKey.(*rsa.PrivateKey); !ok || k.N.BitLen() != 2048 {
			t.Errorf("%s: key %T, want RSA-2048", pair.CertFile, kp.PrivateKey)
		}
	}

	if ca := readCert(t, p.CACertFile); ca.PublicKeyAlgorithm != x509.RSA {
		t.Errorf("CA key %v, want RSA", ca.PublicKeyAlgorithm)
	}

	if serving := readCert(t, p.Serving.CertFile); serving.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("serving certificate signed with %v, want SHA256-RSA", serving.SignatureAlgorithm)
	}
}

func TestTokenFile(t *testing.T) {
	p := NewPKI(t, t.TempDir(), DefaultSANs())

	extra, err := p.AddTokenUser(TokenUser{Name: "reader", Groups: []string{"g1", "g2"}})
	if err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(p.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}

	want := [][]string{
		{p.Admin.Token, "extractedprism-admin", "extractedprism-admin-uid", "system:masters"},
		{p.Node.Token, "extractedprism-node", "extractedprism-node-uid", "extractedprism:nodes"},
		{extra.Token, "reader", "reader-uid", "g1,g2"},
	}

	if !slices.EqualFunc(rows, want, slices.Equal) {
		t.Errorf("token file rows = %q, want %q", rows, want)
	}

	if p.Admin.Token == p.Node.Token || extra.Token == "" {
		t.Error("tokens are not distinct and non-empty")
	}
}

// TestCertWithoutLoopbackSAN checks the two verification modes against a
// certificate lacking 127.0.0.1: the test client must reject it, the readiness
// probe must accept it (chain only).
func TestCertWithoutLoopbackSAN(t *testing.T) {
	p := NewPKI(t, t.TempDir(), DefaultSANs())

	pair, err := p.IssueServingCert("no-loopback", DefaultSANs().Without("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}

	srv := startTLSServer(t, pair)
	ctx := context.Background()

	if _, err := p.AdminClient(srv.URL).Do(ctx, http.MethodGet, "/", "", nil); err == nil {
		t.Error("client accepted a certificate without the 127.0.0.1 SAN")
	}

	if _, err := p.Client(srv.URL, p.Admin, "kubernetes").Do(ctx, http.MethodGet, "/", "", nil); err != nil {
		t.Errorf("client with tls server name kubernetes: %v", err)
	}

	resp, err := readyzClient(p).Get(srv.URL)
	if err != nil {
		t.Fatalf("readyz client: %v", err)
	}
	resp.Body.Close()
}

func TestReadyzClientRejectsForeignCA(t *testing.T) {
	p := NewPKI(t, t.TempDir(), DefaultSANs())
	other := NewPKI(t, t.TempDir(), DefaultSANs())

	srv := startTLSServer(t, other.Serving)
	if resp, err := readyzClient(p).Get(srv.URL); err == nil {
		resp.Body.Close()
		t.Error("readyz client accepted a certificate from another CA")
	}
}

func startTLSServer(t *testing.T, pair CertPair) *httptest.Server {
	t.Helper()

	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}

	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// The SAN checks above rely on the client dialling 127.0.0.1.
	if !strings.HasPrefix(srv.URL, "https://127.0.0.1:") {
		t.Fatalf("unexpected test server URL %s", srv.URL)
	}

	return srv
}
