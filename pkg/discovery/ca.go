package discovery

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrNoCA means no CA could be found to verify API server certificates.
var ErrNoCA = errors.New("no CA found")

// Where a CA may be found when none is named, after the discovery
// kubeconfig's own.
var fallbackCAFiles = []string{
	"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", // in a pod
	"/etc/kubernetes/pki/ca.crt",                           // kubeadm
}

// CAPool finds the CA that API server certificates are checked against: the
// file named, else the discovery credentials' CA, else the in-cluster or
// kubeadm CA. It returns where it was found.
func CAPool(caFile, kubeconfig string) (*x509.CertPool, string, error) {
	if caFile != "" {
		return poolFromFile(caFile)
	}

	if rc, from, err := Credentials(kubeconfig); err == nil {
		if len(rc.CAData) > 0 {
			return poolFromPEM(rc.CAData, from)
		}

		if rc.CAFile != "" {
			return poolFromFile(rc.CAFile)
		}
	}

	for _, f := range fallbackCAFiles {
		if _, err := os.Stat(f); err == nil {
			return poolFromFile(f)
		}
	}

	return nil, "", fmt.Errorf("%w: not in health_ca_file, the kubeconfig, %v", ErrNoCA, fallbackCAFiles)
}

func poolFromFile(path string) (*x509.CertPool, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("health CA: %w", err)
	}

	return poolFromPEM(data, path)
}

func poolFromPEM(pem []byte, from string) (*x509.CertPool, string, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, "", fmt.Errorf("health CA from %s: no certificate in it", from)
	}

	return pool, from, nil
}
