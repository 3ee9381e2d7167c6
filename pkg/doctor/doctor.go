// Package doctor checks a node for what usually goes wrong with
// extractedprism and says how to fix it: one line per check, ok, warn or
// fail.
package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
	"github.com/lexfrei/extractedprism/pkg/terminal"
)

// Verdict of one check.
type Verdict string

// Verdicts, from good to bad.
const (
	OK   Verdict = "ok"
	Warn Verdict = "warn"
	Fail Verdict = "fail"
)

// Result is one check's outcome.
type Result struct {
	Verdict Verdict
	Check   string
	Detail  string
	Fix     string // how to fix it, when not ok
}

// String is the result for a terminal: its texts come in part from
// certificates, API servers and files, and are escaped
// (terminal.Escape).
func (r Result) String() string {
	esc := terminal.Escape

	s := fmt.Sprintf("%-4s  %s: %s", r.Verdict, esc(r.Check), esc(r.Detail))
	if r.Fix != "" {
		s += "\n      fix: " + esc(r.Fix)
	}

	return s
}

// Options say what to examine.
type Options struct {
	Config config.Config
	// Proxy is the address clients use; default bind_address:bind_port.
	Proxy string
	// KubeletKubeconfig is kubelet's kubeconfig; empty skips the check.
	KubeletKubeconfig string
	// RootCAs verify API server certificates; nil means the CA the health
	// checks would use, if any.
	RootCAs *x509.CertPool
	Timeout time.Duration
}

// Run performs every check and writes one line per result to w. It
// returns the results; any Fail means the node needs attention.
func Run(ctx context.Context, w io.Writer, o Options) []Result {
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Second
	}

	var out []Result

	add := func(rs ...Result) {
		for _, r := range rs {
			fmt.Fprintln(w, r)
			out = append(out, r)
		}
	}

	add(units()...)

	for _, ep := range o.Config.Endpoints {
		add(upstream(ctx, o, ep))
	}

	add(snis(ctx, o)...)

	add(certificate(ctx, o)...)
	add(access(ctx, o))

	if o.KubeletKubeconfig != "" {
		add(kubelet(o))
	}

	return out
}

// units reports the systemd units where systemd runs.
func units() []Result {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return []Result{{Verdict: OK, Check: "systemd", Detail: "not running under systemd (container or DaemonSet mode); unit checks skipped"}}
	}

	var out []Result

	for _, u := range []string{"extractedprism.socket", "extractedprism.service"} {
		state, _ := exec.Command("systemctl", "is-active", u).Output()
		s := strings.TrimSpace(string(state))

		switch {
		case s == "active":
			out = append(out, Result{Verdict: OK, Check: u, Detail: "active"})
		case u == "extractedprism.service" && s == "inactive":
			out = append(out, Result{Verdict: OK, Check: u, Detail: "inactive; the socket starts it on the first connection"})
		default:
			out = append(out, Result{Verdict: Fail, Check: u, Detail: s, Fix: "systemctl enable --now extractedprism.socket; journalctl -u extractedprism"})
		}
	}

	return out
}

// upstream checks one endpoint over TCP and TLS.
func upstream(ctx context.Context, o Options, ep string) Result {
	name := "upstream " + ep
	d := net.Dialer{Timeout: o.Timeout}

	c, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		return Result{Verdict: Fail, Check: name, Detail: "TCP: " + err.Error(), Fix: "check the address, the API server and any firewall between this node and it"}
	}
	defer c.Close()

	tc := tls.Client(c, tlsConfig(o))
	_ = tc.SetDeadline(time.Now().Add(o.Timeout))

	if err := tc.HandshakeContext(ctx); err != nil {
		return Result{Verdict: Warn, Check: name, Detail: "TCP ok, TLS: " + err.Error(), Fix: "is this an API server? set health_ca_file or kubeconfig so its certificate can be verified"}
	}

	return Result{Verdict: OK, Check: name, Detail: "TCP and TLS ok"}
}

func tlsConfig(o Options) *tls.Config {
	cfg := &tls.Config{ServerName: o.Config.TLSServerName, MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs}
	if o.RootCAs == nil {
		cfg.InsecureSkipVerify = true //nolint:gosec // only the names are examined, below
	}

	return cfg
}

// certificate checks that the certificate served through the proxy covers
// the names clients will check: 127.0.0.1 and localhost unless they set
// tls-server-name, which must then be covered.
func certificate(ctx context.Context, o Options) []Result {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: o.Timeout}, Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // reading names only

	c, err := d.DialContext(ctx, "tcp", o.Proxy)
	if err != nil {
		return []Result{{Verdict: Fail, Check: "proxy " + o.Proxy, Detail: err.Error(), Fix: "is extractedprism running and is an upstream healthy? see extractedprism status"}}
	}
	defer c.Close()

	cert := c.(*tls.Conn).ConnectionState().PeerCertificates[0]

	var out []Result

	for _, name := range []string{"127.0.0.1", "localhost", o.Config.TLSServerName} {
		check := "certificate covers " + name
		if err := cert.VerifyHostname(name); err != nil {
			// 127.0.0.1 is what kubelet and friends are pointed at.
			v, fix := Fail, "add it to the API server certificate (kubeadm: apiServer.certSANs: [127.0.0.1, localhost, \"::1\"]) and reissue it"
			if name != o.Config.TLSServerName {
				fix += "; or set tls-server-name: " + o.Config.TLSServerName + " in every client's kubeconfig"
			}

			if name == "localhost" {
				v = Warn
			}

			out = append(out, Result{Verdict: v, Check: check, Detail: "no: " + strings.Join(append(cert.DNSNames, ipStrings(cert.IPAddresses)...), ", "), Fix: fix})

			continue
		}

		out = append(out, Result{Verdict: OK, Check: check, Detail: "yes"})
	}

	return out
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}

	return out
}

// access asks the API, through the proxy, whether the discovery
// credentials may get, list and watch the kubernetes EndpointSlice.
func access(ctx context.Context, o Options) Result {
	const check = "discovery credentials"

	if !o.Config.EnableDiscovery {
		return Result{Verdict: OK, Check: check, Detail: "discovery is off"}
	}

	rc, from, err := discovery.Credentials(o.Config.Kubeconfig)
	if err != nil {
		return Result{Verdict: Warn, Check: check, Detail: err.Error(), Fix: "set kubeconfig (see packaging/kubernetes/rbac-host.yaml) or static endpoints only will be used"}
	}

	client, err := discovery.NewClient(discovery.ThroughProxy(rc, o.Proxy, o.Config.TLSServerName))
	if err != nil {
		return Result{Verdict: Fail, Check: check, Detail: err.Error()}
	}

	var denied []string

	for _, verb := range []string{"get", "list", "watch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: discovery.Namespace, Verb: verb, Group: "discovery.k8s.io", Resource: "endpointslices", Name: discovery.SliceName,
			},
		}}

		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		res := &authorizationv1.SelfSubjectAccessReview{}
		err := client.Authorization.Post().Resource("selfsubjectaccessreviews").Body(review).Do(ctx).Into(res)

		cancel()

		if err != nil {
			return Result{Verdict: Fail, Check: check, Detail: from + ": " + err.Error(), Fix: "check the kubeconfig's credentials"}
		}

		if !res.Status.Allowed {
			denied = append(denied, verb)
		}
	}

	if len(denied) > 0 {
		return Result{Verdict: Fail, Check: check, Detail: from + " may not " + strings.Join(denied, "/") + " endpointslices/kubernetes in default",
			Fix: "kubectl apply -f /usr/share/doc/extractedprism/examples/rbac-host.yaml, with the user in group extractedprism:nodes"}
	}

	return Result{Verdict: OK, Check: check, Detail: from + " may get/list/watch endpointslices/kubernetes"}
}

// kubelet checks that kubelet talks to the API through the proxy.
func kubelet(o Options) Result {
	const check = "kubelet kubeconfig"

	cfg, err := clientcmd.LoadFromFile(o.KubeletKubeconfig)
	if err != nil {
		return Result{Verdict: Warn, Check: check, Detail: err.Error()}
	}

	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil {
		return Result{Verdict: Warn, Check: check, Detail: "no current context in " + o.KubeletKubeconfig}
	}

	server := cfg.Clusters[ctx.Cluster].Server
	for _, want := range []string{"https://" + o.Proxy, "https://localhost:" + portOf(o.Proxy)} {
		if server == want {
			return Result{Verdict: OK, Check: check, Detail: "server " + server}
		}
	}

	return Result{Verdict: Fail, Check: check, Detail: "server " + server + " bypasses the proxy",
		Fix: "set server: https://" + o.Proxy + " in " + o.KubeletKubeconfig + " and restart kubelet"}
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)

	return port
}
