package kubeharness

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// Kubeconfig is a single-cluster, single-user kubeconfig with token or
// client-certificate auth and an embedded CA.
type Kubeconfig struct {
	Server string
	CAPEM  []byte
	Token  string
	// ClientCert, when set, authenticates with this certificate instead of
	// Token, as a kubeconfig minted by `kubeadm kubeconfig user` does. The
	// files are referenced by path, not embedded.
	ClientCert *CertPair
	// User is the name of the user entry (informational only).
	User string
	// TLSServerName, when set, is the name the client verifies the serving
	// certificate against instead of the host in Server.
	TLSServerName string
}

// Kubeconfig returns a kubeconfig for server authenticating as u.
func (p *PKI) Kubeconfig(server string, u TokenUser) Kubeconfig {
	return Kubeconfig{Server: server, CAPEM: p.CAPEM, Token: u.Token, User: u.Name}
}

// AdminKubeconfig writes a kubeconfig for the Admin token user to path.
func (p *PKI) AdminKubeconfig(path, server string) error {
	return p.Kubeconfig(server, p.Admin).Write(path)
}

// UserKubeconfig writes a kubeconfig for u to path; tlsServerName may be empty.
func (p *PKI) UserKubeconfig(path, server string, u TokenUser, tlsServerName string) error {
	k := p.Kubeconfig(server, u)
	k.TLSServerName = tlsServerName

	return k.Write(path)
}

// CertKubeconfig writes a kubeconfig for server that authenticates with the
// client certificate cert (see IssueClientCert) to path.
func (p *PKI) CertKubeconfig(path, server string, cert CertPair) error {
	return Kubeconfig{Server: server, CAPEM: p.CAPEM, ClientCert: &cert, User: "cert"}.Write(path)
}

// Write writes the kubeconfig with mode 0600 (it holds a bearer token).
func (k Kubeconfig) Write(path string) error {
	if err := os.WriteFile(path, []byte(k.YAML()), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}

	return nil
}

// YAML renders the kubeconfig. Strings are emitted as JSON strings, which
// are valid double-quoted YAML scalars, so no escaping rules of our own are
// needed.
func (k Kubeconfig) YAML() string {
	user := k.User
	if user == "" {
		user = "user"
	}

	var b strings.Builder

	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n")
	fmt.Fprintf(&b, "    server: %s\n", quote(k.Server))
	fmt.Fprintf(&b, "    certificate-authority-data: %s\n", base64.StdEncoding.EncodeToString(k.CAPEM))

	if k.TLSServerName != "" {
		fmt.Fprintf(&b, "    tls-server-name: %s\n", quote(k.TLSServerName))
	}

	fmt.Fprintf(&b, "users:\n- name: %s\n  user:\n", quote(user))

	if k.ClientCert != nil {
		fmt.Fprintf(&b, "    client-certificate: %s\n    client-key: %s\n", quote(k.ClientCert.CertFile), quote(k.ClientCert.KeyFile))
	} else {
		fmt.Fprintf(&b, "    token: %s\n", quote(k.Token))
	}

	fmt.Fprintf(&b, "contexts:\n- name: test\n  context:\n    cluster: test\n    user: %s\n", quote(user))
	b.WriteString("current-context: test\n")

	return b.String()
}

func quote(s string) string {
	data, _ := json.Marshal(s) // a string always marshals

	return string(data)
}
