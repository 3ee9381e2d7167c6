package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The same health and retry settings for every proxy:
//
//	check: TCP connect every 1 s, 500 ms timeout, 1 failure takes an
//	upstream out, 2 successes bring it back; connect timeout 1 s; a failed
//	connect goes on to another upstream (up to 3 tries); least connections.
//
// nginx's open-source stream module has no active checks: it has the
// passive equivalent (max_fails=1 fail_timeout=1s, proxy_next_upstream).
const (
	checkInterval = "1s"
	checkTimeout  = "500ms"
	checkFall     = 1
	checkRise     = 2
	connectTO     = "1s"
)

type proxyDef struct {
	Name   string
	Listen string // client-facing address; "" for direct
	Health string // extractedprism's health server
	bin    string

	argv   []string
	env    []string
	notify bool // takes NOTIFY_SOCKET (sd_notify)
}

func (d *proxyDef) direct() bool { return d.Listen == "" }

type ports struct {
	Upstream int // on 127.0.0.2..4
	EP       int // extractedprism (and EP+1 for its health server)
	HAProxy  int
	Nginx    int
}

func upstreamAddrs(n, port int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.0.%d:%d", i+2, port)
	}

	return out
}

func writeConfig(dir, name, content string) (string, error) {
	path := filepath.Join(dir, name)

	return path, os.WriteFile(path, []byte(content), 0o644)
}

func extractedprismDef(bin, dir string, p ports, ups []string) (*proxyDef, error) {
	quoted := make([]string, len(ups))
	for i, u := range ups {
		quoted[i] = fmt.Sprintf("%q", u)
	}

	cfg := fmt.Sprintf(`# written by bench/benchtool
bind_address = "127.0.0.1"
bind_port = %d
health_address = "127.0.0.1"
health_port = %d
endpoints = [%s]
enable_discovery = false
health_check = "tcp"
health_interval = %q
health_timeout = %q
health_fall = %d
health_rise = %d
dial_timeout = %q
state_directory = ""
drain_timeout = "1s"
log_level = "warn"
`, p.EP, p.EP+1, strings.Join(quoted, ", "), checkInterval, checkTimeout, checkFall, checkRise, connectTO)

	path, err := writeConfig(dir, "extractedprism.toml", cfg)
	if err != nil {
		return nil, err
	}

	return &proxyDef{
		Name:   "extractedprism",
		Listen: fmt.Sprintf("127.0.0.1:%d", p.EP),
		Health: fmt.Sprintf("127.0.0.1:%d", p.EP+1),
		bin:    bin,
		argv:   []string{bin, "run", "--config", path},
		notify: true,
	}, nil
}

func haproxyDef(bin, dir string, p ports, ups []string) (*proxyDef, error) {
	var servers strings.Builder
	for i, u := range ups {
		fmt.Fprintf(&servers, "    server u%d %s\n", i+1, u)
	}

	// maxconn 9000 keeps haproxy's computed descriptor need (2 per
	// connection plus spare) under the 20,000 hard limit.
	cfg := fmt.Sprintf(`# written by bench/benchtool
global
    maxconn 9000
    nbthread 2

defaults
    mode tcp
    timeout connect %s
    timeout client 10m
    timeout server 10m
    timeout check %s
    retries 3
    option redispatch 1

frontend fe
    bind 127.0.0.1:%d
    default_backend be

backend be
    balance leastconn
    default-server check inter %s fall %d rise %d
%s`, connectTO, checkTimeout, p.HAProxy, checkInterval, checkFall, checkRise, servers.String())

	path, err := writeConfig(dir, "haproxy.cfg", cfg)
	if err != nil {
		return nil, err
	}

	return &proxyDef{
		Name:   "haproxy",
		Listen: fmt.Sprintf("127.0.0.1:%d", p.HAProxy),
		bin:    bin,
		argv:   []string{bin, "-db", "-f", path},
	}, nil
}

func nginxDef(bin, module, dir string, p ports, ups []string) (*proxyDef, error) {
	var servers strings.Builder
	for _, u := range ups {
		fmt.Fprintf(&servers, "        server %s max_fails=%d fail_timeout=%s;\n", u, checkFall, checkInterval)
	}

	prefix := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(prefix, 0o777); err != nil {
		return nil, err
	}

	_ = os.Chmod(prefix, 0o777) // the unprivileged master writes its pid here

	// Two workers for two cores, as haproxy's nbthread 2 and Go's
	// GOMAXPROCS=2. worker_connections counts both sides of a proxied
	// connection; accept is not balanced between workers, so one worker
	// may hold all 5,000 idle connections.
	cfg := fmt.Sprintf(`# written by bench/benchtool
load_module %s;
worker_processes 2;
worker_rlimit_nofile 20000;
daemon off;
pid %s/nginx.pid;
error_log stderr warn;

events {
    worker_connections 16000;
}

stream {
    upstream be {
        least_conn;
%s    }

    server {
        listen 127.0.0.1:%d;
        proxy_pass be;
        proxy_connect_timeout %s;
        proxy_timeout 10m;
        proxy_next_upstream on;
        proxy_next_upstream_tries 3;
    }
}
`, module, prefix, servers.String(), p.Nginx, connectTO)

	path, err := writeConfig(dir, "nginx.conf", cfg)
	if err != nil {
		return nil, err
	}

	return &proxyDef{
		Name:   "nginx",
		Listen: fmt.Sprintf("127.0.0.1:%d", p.Nginx),
		bin:    bin,
		argv:   []string{bin, "-p", prefix + "/", "-e", "stderr", "-c", path},
	}, nil
}
