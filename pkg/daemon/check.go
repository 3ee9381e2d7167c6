package daemon

import (
	"crypto/tls"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/check"
	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
)

// checker builds the health check the configuration asks for. Without a CA
// an https check could only skip verification, which must be chosen
// explicitly, so it falls back to tcp and says so.
func (d *Daemon) checker(c config.Config) check.Checker {
	if c.HealthCheck != "https" {
		return check.TCPCheck{}
	}

	tlsConfig := &tls.Config{ServerName: c.TLSServerName, MinVersion: tls.VersionTLS12}

	if c.HealthInsecure {
		tlsConfig.InsecureSkipVerify = true //nolint:gosec // the operator's explicit choice
		d.log.Warn("https health checks do not verify the API server certificate (health_insecure_skip_verify)")

		return check.NewHTTPSCheck(tlsConfig, c.HealthPath)
	}

	pool, from, err := discovery.CAPool(c.HealthCAFile, c.Kubeconfig)
	if err != nil {
		d.log.Warn("https health checks need a CA; using tcp checks. Set health_ca_file (or kubeconfig), "+
			"or health_insecure_skip_verify = true to accept any certificate.", zap.Error(err))

		return check.TCPCheck{}
	}

	tlsConfig.RootCAs = pool
	d.log.Info("https health checks", zap.String("path", c.HealthPath), zap.String("ca", from), zap.String("tls_server_name", c.TLSServerName))

	return check.NewHTTPSCheck(tlsConfig, c.HealthPath)
}
