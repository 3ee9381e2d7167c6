//go:build integration

package integration

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/netdev"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

const (
	linkLocal = "169.254.7.45"
	podIP     = "10.244.0.5"
	podGW     = "10.244.0.1" // the node's end of the pod's veth
)

// podNetns makes a pod's network namespace as a CNI would: a veth pair,
// the pod's end inside with its address and a default route to the node's
// end. It returns the namespace; the test's own (the node's) is the one it
// runs in, a private one made by hack/netns-run.sh.
func podNetns(t *testing.T) netns.NsHandle {
	t.Helper()

	// A process keeps the namespace alive; it is killed at cleanup.
	holder := exec.Command("unshare", "--net", "sleep", "600")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })

	var pod netns.NsHandle

	// unshare has to have made the namespace before it is usable.
	eventually(t, 5*time.Second, "the pod namespace", func() bool {
		h, err := netns.GetFromPid(holder.Process.Pid)
		if err != nil {
			return false
		}

		self, _ := netns.Get()
		defer self.Close()

		if h.Equal(self) {
			h.Close()

			return false
		}

		pod = h

		return true
	})
	t.Cleanup(func() { pod.Close() })

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth-pod"}, PeerName: "eth0"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { _ = netlink.LinkDel(veth) })

	peer, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}

	if err := netlink.LinkSetNsFd(peer, int(pod)); err != nil {
		t.Fatal(err)
	}

	must(t, netlink.AddrAdd(veth, mustAddr(t, podGW+"/24")))
	must(t, netlink.LinkSetUp(veth))

	h, err := netlink.NewHandleAt(pod)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	for _, name := range []string{"lo", "eth0"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}

		must(t, h.LinkSetUp(l))

		if name == "eth0" {
			must(t, h.AddrAdd(l, mustAddr(t, podIP+"/24")))
			must(t, h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(podGW)}))
		}
	}

	return pod
}

func must(t *testing.T, err error) {
	t.Helper()

	if err != nil {
		t.Fatal(err)
	}
}

func mustAddr(t *testing.T, cidr string) *netlink.Addr {
	t.Helper()

	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}

	return a
}

// inNetns runs f on a thread inside ns and moves the thread back before
// letting it go; should that fail, the goroutine ends locked and Go ends
// the thread (or parks it, if it is the main one), so no other goroutine
// runs in the pod's namespace by mistake.
func inNetns[T any](t *testing.T, ns netns.NsHandle, f func() T) T {
	t.Helper()

	out := make(chan T, 1)
	errc := make(chan error, 1)

	go func() {
		runtime.LockOSThread()

		orig, err := netns.Get()
		if err != nil {
			errc <- err

			return
		}
		defer orig.Close()

		if err := netns.Set(ns); err != nil {
			errc <- err

			return
		}

		v := f()

		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}

		out <- v
	}()

	select {
	case v := <-out:
		return v
	case err := <-errc:
		t.Fatal(err)
	}

	var zero T

	return zero
}

// dialErr connects to addr and reports the error, nil if it connected.
func dialErr(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
	}

	return err
}

// listeningOn lists this namespace's listening TCP sockets on port, from
// /proc/net/tcp (addresses in the kernel's byte order).
func listeningOn(t *testing.T, port int) []string {
	t.Helper()

	// This thread's namespace, the node's: /proc/self/net is the main
	// thread's, which may have been the one that visited the pod's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	data, err := os.ReadFile("/proc/thread-self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}

	var out []string

	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "0A" {
			continue
		}

		hexAddr, hexPort, _ := strings.Cut(f[1], ":")
		p, _ := strconv.ParseUint(hexPort, 16, 16)
		a, _ := strconv.ParseUint(hexAddr, 16, 32)

		if int(p) == port {
			ip := netip.AddrFrom4([4]byte{byte(a), byte(a >> 8), byte(a >> 16), byte(a >> 24)})
			out = append(out, ip.String())
		}
	}

	return out
}

// TestLinkLocalFromAPod: a pod without host networking reaches a real API
// server through the proxy on the link-local address; it reaches neither
// the health port nor anything on the node's other addresses.
func TestLinkLocalFromAPod(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1)

	// The daemon first: with IP_FREEBIND it binds the address before the
	// interface exists, so boot order does not matter.
	r := startDaemon(t, addr(kubeharness.IPv4Addr1), func(cfg *config.Config) {
		cfg.BindPort = 7445
		cfg.HealthPort = 7446
		cfg.LinkLocalAddress = linkLocal
	})

	res, err := netdev.Ensure(netdev.DefaultInterface, netip.MustParseAddr(linkLocal))
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { _, _ = netdev.Remove(netdev.DefaultInterface) })
	t.Logf("%s: %s, created %v, address added %v", netdev.DefaultInterface, res.Kind, res.Created, res.Added)

	if !res.Created || !res.Added {
		t.Fatalf("first Ensure: %+v", res)
	}

	if again, err := netdev.Ensure(netdev.DefaultInterface, netip.MustParseAddr(linkLocal)); err != nil || again.Created || again.Added {
		t.Fatalf("Ensure is not idempotent: %+v, %v", again, err)
	}

	pod := podNetns(t)
	client := c.httpsClient(t)

	// A real API request, authenticated, through the link-local address.
	type answer struct {
		status int
		body   string
		err    error
	}

	got := inNetns(t, pod, func() answer {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://"+net.JoinHostPort(linkLocal, "7445")+"/api", nil)
		req.Header.Set("Authorization", "Bearer "+c.pki.Node.Token)

		resp, err := client.Do(req)
		if err != nil {
			return answer{err: err}
		}
		defer resp.Body.Close()

		body, err := io.ReadAll(resp.Body)

		return answer{status: resp.StatusCode, body: string(body), err: err}
	})

	if got.err != nil || got.status != http.StatusOK || !strings.Contains(got.body, `"kind":"APIVersions"`) {
		t.Fatalf("GET /api from the pod through %s:7445: %d %q %v", linkLocal, got.status, got.body, got.err)
	}

	t.Logf("pod -> %s:7445 -> API server: %d %s", linkLocal, got.status, strings.TrimSpace(got.body))

	// What a pod must not reach: each is refused (the node answers, nothing
	// listens there), not merely unrouted.
	for _, target := range []string{
		net.JoinHostPort(linkLocal, "7446"),             // health, status, metrics
		net.JoinHostPort(podGW, "7445"),                 // the node's address on the pod's veth
		net.JoinHostPort(podGW, "7446"),                 //
		net.JoinHostPort(kubeharness.IPv4Addr1, "7445"), // another node address
		net.JoinHostPort("127.0.0.1", "7445"),           // the pod's own loopback
	} {
		err := inNetns(t, pod, func() error { return dialErr(target) })
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("pod -> %s: %v, want connection refused", target, err)
		}
	}

	// And from the node: the proxy on loopback and the link-local address
	// only; health on loopback only.
	if got := listeningOn(t, 7445); !sameSet(got, []string{"127.0.0.1", linkLocal}) {
		t.Errorf("listening on 7445: %v, want 127.0.0.1 and %s", got, linkLocal)
	}

	if got := listeningOn(t, 7446); !sameSet(got, []string{"127.0.0.1"}) {
		t.Errorf("listening on 7446: %v, want 127.0.0.1 only", got)
	}

	// The node's own clients are unaffected.
	if body, err := readyz(client, r.d.ProxyAddr().String()); err != nil || body != "ok" {
		t.Fatalf("node -> 127.0.0.1:7445: %q %v", body, err)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}

	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}

	for _, s := range b {
		seen[s]--
	}

	for _, n := range seen {
		if n != 0 {
			return false
		}
	}

	return true
}
