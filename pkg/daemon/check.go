package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/balancer"
	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
)

// Where a CA for the https health check may be found when health_ca_file is
// empty, after the discovery kubeconfig's own.
var fallbackCAFiles = []string{
	"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", // in a pod
	"/etc/kubernetes/pki/ca.crt",                           // kubeadm
}

// checker builds the health check the configuration asks for. Without a CA
// an https check could only skip verification, which must be chosen
// explicitly, so it falls back to tcp and says so.
func (d *Daemon) checker(c config.Config) balancer.Checker {
	if c.HealthCheck != "https" {
		return balancer.TCPCheck{}
	}

	tlsConfig := &tls.Config{ServerName: c.TLSServerName, MinVersion: tls.VersionTLS12}

	if c.HealthInsecure {
		tlsConfig.InsecureSkipVerify = true //nolint:gosec // the operator's explicit choice
		d.log.Warn("https health checks do not verify the API server certificate (health_insecure_skip_verify)")

		return balancer.NewHTTPSCheck(tlsConfig, c.HealthPath)
	}

	pool, from, err := caPool(c)
	if err != nil {
		d.log.Warn("https health checks need a CA; using tcp checks. Set health_ca_file (or kubeconfig), "+
			"or health_insecure_skip_verify = true to accept any certificate.", zap.Error(err))

		return balancer.TCPCheck{}
	}

	tlsConfig.RootCAs = pool
	d.log.Info("https health checks", zap.String("path", c.HealthPath), zap.String("ca", from), zap.String("tls_server_name", c.TLSServerName))

	return balancer.NewHTTPSCheck(tlsConfig, c.HealthPath)
}

var errNoCA = errors.New("no CA found")

func caPool(c config.Config) (*x509.CertPool, string, error) {
	if c.HealthCAFile != "" {
		return poolFromFile(c.HealthCAFile)
	}

	if rc, from, err := discovery.Credentials(c.Kubeconfig); err == nil {
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

	return nil, "", fmt.Errorf("%w: not in health_ca_file, the kubeconfig, %v", errNoCA, fallbackCAFiles)
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
