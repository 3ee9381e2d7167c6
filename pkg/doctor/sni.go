package doctor

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
)

// The SNI trap: an API server behind a front end that routes TLS by the
// server name the client sends (SNI) answers only the names it was set up
// for. A client pointed at https://127.0.0.1:7445 sends no SNI at all (an
// IP is never sent) and one pointed at https://localhost:7445 sends
// "localhost"; such a front end then hands the connection to another
// backend, or drops it, and the client sees a certificate for something
// else or a reset (talos#8128). The fix is a tls-server-name the front end
// routes and the certificate covers, in every client's kubeconfig.

// nodeClient is a client on this node whose TLS goes through the proxy to
// the upstreams: the server name it sends and the name it checks.
type nodeClient struct {
	who    string
	sni    string // "" sends none
	verify string // the name the certificate must cover
	// setting is where the client's tls-server-name is set.
	setting string
}

// sniProbe is what one SNI reached on one upstream.
type sniProbe struct {
	sni  string
	leaf *x509.Certificate // nil when the handshake failed
	err  error
}

// nodeClients lists the node's clients of the proxy: kubelet (from its
// kubeconfig), the daemon's discovery, and pods through the link-local
// address if it is served.
func nodeClients(o Options) []nodeClient {
	out := []nodeClient{{
		who: "discovery", sni: o.Config.TLSServerName, verify: o.Config.TLSServerName,
		setting: "tls_server_name in " + configName,
	}}

	if o.KubeletKubeconfig != "" {
		if c, ok := kubeletClient(o.KubeletKubeconfig); ok {
			out = append(out, c)
		}
	}

	if o.Config.LinkLocalAddress != "" {
		out = append(out, nodeClient{
			who: "pods via " + o.Config.LinkLocalAddress, sni: "", verify: o.Config.LinkLocalAddress,
			setting: "tls-server-name in the pods' kubeconfig",
		})
	}

	return out
}

const configName = "/etc/extractedprism/config.toml"

func kubeletClient(path string) (nodeClient, bool) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nodeClient{}, false
	}

	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil {
		return nodeClient{}, false
	}

	cluster := cfg.Clusters[ctx.Cluster]
	c := nodeClient{who: "kubelet", setting: "tls-server-name in " + path}

	host := cluster.Server
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}

	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}

	host = strings.Trim(strings.TrimSuffix(host, "/"), "[]")

	switch {
	case cluster.TLSServerName != "":
		c.sni, c.verify = cluster.TLSServerName, cluster.TLSServerName
	case net.ParseIP(host) != nil:
		c.sni, c.verify = "", host // Go sends no SNI for an IP
	default:
		c.sni, c.verify = host, host
	}

	return c, true
}

// probeNames are the server names tried on every upstream: those the
// node's clients send and the usual ones.
func probeNames(clients []nodeClient) []string {
	names := []string{"kubernetes", "kubernetes.default.svc", "localhost", ""}
	for _, c := range clients {
		names = append(names, c.sni)
	}

	slices.Sort(names)

	return slices.Compact(names)
}

// probeSNI makes a TLS handshake with upstream ep sending sni and returns
// the certificate it got. Names are checked afterwards, so the handshake
// verifies nothing.
func probeSNI(ctx context.Context, o Options, ep, sni string) sniProbe {
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: o.Timeout},
		Config:    &tls.Config{ServerName: sni, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, //nolint:gosec // names checked below
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	c, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		return sniProbe{sni: sni, err: err}
	}
	defer c.Close()

	certs := c.(*tls.Conn).ConnectionState().PeerCertificates //nolint:forcetypeassert // a tls.Dialer's
	if len(certs) == 0 {
		return sniProbe{sni: sni, err: fmt.Errorf("no certificate")}
	}

	return sniProbe{sni: sni, leaf: certs[0]}
}

// covers reports whether cert is valid for name, and chains to roots when
// they are known.
func covers(cert *x509.Certificate, name string, roots *x509.CertPool) error {
	if roots != nil {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			return err
		}

		return nil
	}

	return cert.VerifyHostname(name)
}

func certID(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)

	return hex.EncodeToString(sum[:4])
}

func certNames(c *x509.Certificate) string {
	return strings.Join(append(slices.Clone(c.DNSNames), ipStrings(c.IPAddresses)...), ", ")
}

func sniLabel(sni string) string {
	if sni == "" {
		return "(no SNI)"
	}

	return sni
}

// sniCheck tests one upstream with every probe name and reports which
// certificate each reached, which names each certificate covers, and
// whether each of the node's clients gets a certificate for the name it
// checks. It also returns the names that work on this upstream.
func sniCheck(ctx context.Context, o Options, ep string, clients []nodeClient) (Result, map[string]bool) {
	name := "SNI " + ep
	probes := map[string]sniProbe{}

	var lines []string

	certs := map[string]*x509.Certificate{}

	var order []string

	for _, sni := range probeNames(clients) {
		p := probeSNI(ctx, o, ep, sni)
		probes[sni] = p

		if p.err != nil {
			lines = append(lines, fmt.Sprintf("%s -> handshake failed: %v", sniLabel(sni), p.err))

			continue
		}

		id := certID(p.leaf)
		if certs[id] == nil {
			certs[id] = p.leaf
			order = append(order, id)
		}

		lines = append(lines, fmt.Sprintf("%s -> certificate %s (CN %s)", sniLabel(sni), id, p.leaf.Subject.CommonName))
	}

	for _, id := range order {
		lines = append(lines, fmt.Sprintf("certificate %s covers: %s", id, certNames(certs[id])))
	}

	working := map[string]bool{}

	for _, sni := range []string{o.Config.TLSServerName, "kubernetes.default.svc", "kubernetes"} {
		if p := probes[sni]; sni != "" && p.leaf != nil && covers(p.leaf, sni, o.RootCAs) == nil {
			working[sni] = true
		}
	}

	verdict := OK

	for _, c := range clients {
		p := probes[c.sni]

		var problem string

		switch {
		case p.err != nil:
			problem = "its handshake fails"
		case covers(p.leaf, c.verify, o.RootCAs) != nil:
			problem = fmt.Sprintf("certificate %s is not valid for %s: %v", certID(p.leaf), c.verify, covers(p.leaf, c.verify, o.RootCAs))
		}

		if problem == "" {
			lines = append(lines, fmt.Sprintf("%s (sends %s, checks %s): ok", c.who, sniLabel(c.sni), c.verify))

			continue
		}

		lines = append(lines, fmt.Sprintf("%s (sends %s, checks %s): %s", c.who, sniLabel(c.sni), c.verify, problem))
		verdict = Fail
	}

	return Result{Verdict: verdict, Check: name, Detail: strings.Join(lines, "\n        ")}, working
}

// snis runs sniCheck on every upstream and, where a client fails, says
// which tls-server-name to set: one that reached a certificate covering it
// on every upstream.
func snis(ctx context.Context, o Options) []Result {
	clients := nodeClients(o)

	var (
		out    []Result
		common map[string]bool
	)

	for _, ep := range o.Config.Endpoints {
		r, working := sniCheck(ctx, o, ep, clients)
		out = append(out, r)

		if common == nil {
			common = working
		} else {
			for n := range common {
				if !working[n] {
					delete(common, n)
				}
			}
		}
	}

	var best string

	for _, n := range []string{o.Config.TLSServerName, "kubernetes.default.svc", "kubernetes"} {
		if common[n] {
			best = n

			break
		}
	}

	for i := range out {
		if out[i].Verdict != Fail {
			continue
		}

		if best == "" {
			out[i].Fix = "no server name works on every upstream: the front end must route one the API server certificate covers (e.g. kubernetes.default.svc) to the API servers"

			continue
		}

		var where []string

		for _, c := range clients {
			if c.sni != best {
				where = append(where, c.setting)
			}
		}

		out[i].Fix = fmt.Sprintf("set %q as the server name: %s (README: \"API servers behind an SNI-routing load balancer\")", best, strings.Join(where, "; "))
	}

	return out
}
