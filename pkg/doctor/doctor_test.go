package doctor

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
)

// tlsServer serves TLS on loopback with a certificate for dnsNames, and
// completes handshakes only.
func tlsServer(t *testing.T, dnsNames ...string) string {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, DNSNames: dnsNames,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}

	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}

	ln, err := tls.Listen("tcp", "127.0.6.20:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { ln.Close() })

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			go func() { defer c.Close(); _ = c.(*tls.Conn).Handshake() }()
		}
	}()

	return ln.Addr().String()
}

// A certificate's names (from whatever answers through the proxy) and
// error texts reach the terminal escaped.
func TestOutputEscapesWhatOthersSay(t *testing.T) {
	t.Parallel()

	addr := tlsServer(t, "evil\x1b]0;owned\x07.example", "x\x1b[2J")

	cfg := config.Default()
	cfg.Endpoints = []string{addr}
	cfg.EnableDiscovery = false

	var out bytes.Buffer

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	Run(ctx, &out, Options{Config: cfg, Proxy: addr, Timeout: 2 * time.Second})

	for i, r := range out.String() {
		if (r < 0x20 && r != '\n') || r == 0x7f {
			t.Fatalf("control character %U at byte %d:\n%q", r, i, out.String())
		}
	}

	if !strings.Contains(out.String(), `evil\x1b]0;owned\x07.example`) {
		t.Fatalf("the certificate's names are not shown, escaped:\n%s", out.String())
	}
}
