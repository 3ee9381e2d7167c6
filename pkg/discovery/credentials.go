package discovery

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNoCredentials means there is nothing to authenticate to the API with:
// discovery stays off and the static endpoints are all there is.
var ErrNoCredentials = errors.New("no credentials for discovery")

// Credentials picks how to authenticate, in order: the kubeconfig setting;
// the kubeconfig systemd passes with LoadCredential=kubeconfig:...; the
// in-cluster service account (DaemonSet mode). It returns the rest config
// and a description of where it came from.
func Credentials(kubeconfig string) (*rest.Config, string, error) {
	if kubeconfig == "" {
		if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
			if p := filepath.Join(dir, "kubeconfig"); fileExists(p) {
				kubeconfig = p
			}
		}
	}

	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
		}

		return cfg, "kubeconfig " + kubeconfig, nil
	}

	cfg, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, "", ErrNoCredentials
	}

	if err != nil {
		return nil, "", fmt.Errorf("in-cluster credentials: %w", err)
	}

	return cfg, "in-cluster service account", nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)

	return err == nil
}

// ThroughProxy points cfg at the local proxy instead of the server it names
// (a ClusterIP or a VIP that may not work yet), keeping its credentials
// and CA, and checks the certificate against serverName.
func ThroughProxy(cfg *rest.Config, proxyAddr, serverName string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Host = "https://" + proxyAddr
	c.APIPath = ""
	c.TLSClientConfig.ServerName = serverName

	return c
}
