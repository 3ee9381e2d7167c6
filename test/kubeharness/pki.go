package kubeharness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// certValidity is long enough for any test run, short enough that a leaked
// key is useless.
const certValidity = 24 * time.Hour

// SANs are the subject alternative names of a serving certificate.
type SANs struct {
	IPs      []string
	DNSNames []string
}

// DefaultSANs returns the names a client of the "kubernetes" service may use
// (127.0.0.1, 10.0.0.1 — the service IP for the default service range —,
// localhost, kubernetes, kubernetes.default, kubernetes.default.svc) plus
// addrs, each of which may be an IP address or a DNS name.
func DefaultSANs(addrs ...string) SANs {
	s := SANs{
		IPs:      []string{"127.0.0.1", defaultServiceIP},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}

	return s.With(addrs...)
}

// With returns a copy of s with names added; IP addresses go to IPs, anything
// else to DNSNames.
func (s SANs) With(names ...string) SANs {
	out := SANs{IPs: slices.Clone(s.IPs), DNSNames: slices.Clone(s.DNSNames)}

	for _, n := range names {
		if net.ParseIP(n) != nil {
			out.IPs = appendUnique(out.IPs, n)
		} else {
			out.DNSNames = appendUnique(out.DNSNames, n)
		}
	}

	return out
}

// Without returns a copy of s lacking the given IPs and DNS names, e.g. to
// produce a certificate that clients dialling 127.0.0.1 must reject.
func (s SANs) Without(names ...string) SANs {
	drop := func(v string) bool { return slices.Contains(names, v) }

	return SANs{
		IPs:      slices.DeleteFunc(slices.Clone(s.IPs), drop),
		DNSNames: slices.DeleteFunc(slices.Clone(s.DNSNames), drop),
	}
}

func appendUnique(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}

	return append(list, v)
}

// CertPair names a PEM certificate and its PEM (PKCS #8) private key.
type CertPair struct {
	CertFile string
	KeyFile  string
}

// PKI is a throwaway certificate authority with everything kube-apiserver
// needs. All files live in Dir.
type PKI struct {
	Dir string

	CACertFile string
	// CAPEM is the CA certificate, for embedding into kubeconfigs.
	CAPEM []byte

	// Serving is the apiserver certificate issued for the SANs given to NewPKI.
	Serving CertPair
	// AdminCert is a client certificate in group system:masters.
	AdminCert CertPair

	// SAPublicKeyFile and SAKeyFile are the service-account token key pair.
	SAPublicKeyFile string
	SAKeyFile       string

	// TokenFile is the --token-auth-file; see Admin, Node and AddTokenUser.
	TokenFile string
	// Admin authenticates with a bearer token as a member of system:masters.
	Admin TokenUser
	// Node is an unprivileged user (group "extractedprism:nodes"), so tests can
	// grant it a least-privilege Role and check that it suffices.
	Node TokenUser

	ca    *x509.Certificate
	caKey crypto.Signer
	rsa   bool // PKIOptions.RSA

	mu     sync.Mutex
	tokens []TokenUser
}

// NewPKI creates a CA, an apiserver serving certificate for sans, an admin
// client certificate, a service-account key pair and a token file with the
// Admin and Node users, all under dir.
func NewPKI(t testing.TB, dir string, sans SANs) *PKI {
	t.Helper()

	return NewPKIWith(t, dir, sans, PKIOptions{})
}

// PKIOptions adjust NewPKIWith.
type PKIOptions struct {
	// RSA makes every key RSA-2048 (the CA, the serving and client
	// certificates, the service-account key), as kubeadm makes them. The
	// default, P-256, is ~1000x faster to generate, but an RSA-2048 serving
	// key is what makes a TLS handshake cost the apiserver what it costs in
	// a kubeadm cluster: measurements of the apiserver's CPU need it.
	RSA bool
}

// NewPKIWith is NewPKI with options.
func NewPKIWith(t testing.TB, dir string, sans SANs, opts PKIOptions) *PKI {
	t.Helper()

	p, err := newPKI(dir, sans, opts)
	if err != nil {
		t.Fatalf("kubeharness: create PKI: %v", err)
	}

	return p
}

func newPKI(dir string, sans SANs, opts PKIOptions) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create PKI dir: %w", err)
	}

	p := &PKI{Dir: dir, rsa: opts.RSA}
	steps := []func() error{
		p.createCA,
		func() (err error) { p.Serving, err = p.IssueServingCert("apiserver", sans); return err },
		func() (err error) {
			p.AdminCert, err = p.IssueClientCert("admin", "extractedprism-admin", "system:masters")
			return err
		},
		p.createSAKeys,
		p.createTokens,
	}

	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}

	return p, nil
}

func (p *PKI) createCA() error {
	key, err := p.newKey()
	if err != nil {
		return err
	}

	tmpl, err := certTemplate("extractedprism-test-ca")
	if err != nil {
		return err
	}

	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature

	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("self-sign CA: %w", err)
	}

	p.ca, err = x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse CA: %w", err)
	}

	p.caKey = key
	p.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	p.CACertFile = filepath.Join(p.Dir, "ca.crt")

	if err := writeFile(p.CACertFile, p.CAPEM); err != nil {
		return err
	}

	return writeKey(filepath.Join(p.Dir, "ca.key"), key)
}

// IssueServingCert issues a server certificate for sans, stored as
// <name>.crt and <name>.key. Use it for certificates with unusual SANs.
func (p *PKI) IssueServingCert(name string, sans SANs) (CertPair, error) {
	tmpl, err := certTemplate("kube-apiserver")
	if err != nil {
		return CertPair{}, err
	}

	for _, s := range sans.IPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return CertPair{}, fmt.Errorf("serving cert %s: invalid IP SAN %q", name, s)
		}

		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}

	tmpl.DNSNames = slices.Clone(sans.DNSNames)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}

	return p.issue(name, tmpl)
}

// IssueClientCert issues a client certificate for user cn in groups orgs,
// stored as <name>.crt and <name>.key.
func (p *PKI) IssueClientCert(name, cn string, orgs ...string) (CertPair, error) {
	tmpl, err := certTemplate(cn)
	if err != nil {
		return CertPair{}, err
	}

	tmpl.Subject.Organization = orgs
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}

	return p.issue(name, tmpl)
}

func (p *PKI) issue(name string, tmpl *x509.Certificate) (CertPair, error) {
	key, err := p.newKey()
	if err != nil {
		return CertPair{}, err
	}

	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.caKey)
	if err != nil {
		return CertPair{}, fmt.Errorf("sign %s certificate: %w", name, err)
	}

	pair := CertPair{
		CertFile: filepath.Join(p.Dir, name+".crt"),
		KeyFile:  filepath.Join(p.Dir, name+".key"),
	}

	if err := writeFile(pair.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
		return CertPair{}, err
	}

	return pair, writeKey(pair.KeyFile, key)
}

func (p *PKI) createSAKeys() error {
	key, err := p.newKey()
	if err != nil {
		return err
	}

	pub, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return fmt.Errorf("marshal service-account public key: %w", err)
	}

	p.SAKeyFile = filepath.Join(p.Dir, "sa.key")
	p.SAPublicKeyFile = filepath.Join(p.Dir, "sa.pub")

	if err := writeKey(p.SAKeyFile, key); err != nil {
		return err
	}

	return writeFile(p.SAPublicKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// certTemplate starts a certificate backdated by an hour, so clock skew
// between the test and the apiserver cannot make it "not yet valid".
func certTemplate(cn string) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}

	now := time.Now()

	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
	}, nil
}

// newKey uses P-256 unless PKIOptions.RSA asked for RSA-2048: generation is
// ~1000x faster and every consumer here (apiserver TLS, service-account
// signing) accepts it.
func (p *PKI) newKey() (crypto.Signer, error) {
	var (
		key crypto.Signer
		err error
	)

	if p.rsa {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}

	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}

	return key, nil
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key %s: %w", path, err)
	}

	return writeFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}

	return nil
}
