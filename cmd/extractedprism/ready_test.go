package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// refusing returns an address on ip where nothing listens: a port the
// kernel handed out and that was closed again.
func refusing(t *testing.T, ip string) string {
	t.Helper()

	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}

	addr := ln.Addr().String()
	ln.Close()

	return addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()

	resp, err := http.Get(url) //nolint:noctx // test
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)

	return resp.StatusCode, string(body)
}

// READY=1 never waits for an upstream: on a control-plane node the API
// server is a static pod that kubelet, ordered after the proxy, has yet to
// start. With every upstream refusing, the real binary under a
// NOTIFY_SOCKET sends READY=1, keeps running and says why it is not
// ready, and serves as soon as an API server appears.
func TestReadyWithEveryUpstreamDown(t *testing.T) {
	t.Parallel()

	a, b := refusing(t, "127.0.6.6"), refusing(t, "127.0.6.7")

	cfgPath := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfgPath, []byte(`endpoints = ["`+a+`", "`+b+`"]
health_interval = "300ms"
health_timeout = "250ms"
enable_discovery = false
`), 0o600); err != nil {
		t.Fatal(err)
	}

	// Both sockets inherited, on ports the kernel chose.
	proxy, proxyAddr := listenInherited(t, "proxy", "127.0.6.5:0")
	health, healthAddr := listenInherited(t, "health", "127.0.6.5:0")
	base := "http://" + healthAddr

	notifyPath, msgs := notifyListener(t)

	cmd, stderr := startActivated(t, cfgPath, notifyPath, nil, proxy, health)

	// The first checks find both refusing, before READY=1 (which then says
	// so) or after it; READY=1 stands.
	if m := expectNotify(t, msgs, "READY=1"); !strings.Contains(m, "STATUS=0/2 upstreams healthy") {
		expectNotify(t, msgs, "STATUS=0/2 upstreams healthy")
	}

	if code, body := httpGet(t, base+"/readyz"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "no usable upstream") {
		t.Fatalf("/readyz = %d %q with every upstream down, want 503 no usable upstream", code, body)
	}

	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d with every upstream down, want 200: the daemon itself is fine", code)
	}

	// The API server comes up on a's address: served without a restart.
	greeter(t, a, "a")
	expectNotify(t, msgs, "STATUS=1/2 upstreams healthy")

	if got := servedBy(t, proxyAddr); got != "a" {
		t.Fatalf("served by %q once a came up, want a", got)
	}

	stopActivated(t, cmd, msgs, stderr)
}
