package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"extractedprism": func() { os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	t.Parallel()

	testscript.Run(t, testscript.Params{
		Dir:  "testdata/script",
		Cmds: map[string]func(*testscript.TestScript, bool, []string){"waithttp": waitHTTP},
	})
}

// waitHTTP URL waits until a daemon started in the background answers at URL
// (any status). There is no event to wait on across processes.
func waitHTTP(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waithttp URL")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()

			return
		}

		time.Sleep(20 * time.Millisecond)
	}

	ts.Fatalf("nothing answered at %s", args[0])
}

func TestExitCodes(t *testing.T) {
	t.Parallel()

	busy, err := net.Listen("tcp", "127.0.3.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	_, busyPort, _ := net.SplitHostPort(busy.Addr().String())
	cfg := filepath.Join(t.TempDir(), "config.toml")

	if err := os.WriteFile(cfg, []byte(`endpoints = ["127.0.0.1:6443"]`), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"version"}, exitOK, ""},
		{[]string{"check-config", "--config", cfg}, exitOK, ""},
		{[]string{"--no-such-flag"}, exitUsage, "unknown flag --no-such-flag"},
		{[]string{"check-config", "--bind-port", "x"}, exitUsage, "--bind-port"},
		{[]string{"check-config", "--config", cfg, "--endpoints", "10.0.0.1"}, exitConfig, `--endpoints[0]: "10.0.0.1" has no port`},
		{[]string{"run", "--config", cfg, "--endpoints", "10.0.0.1"}, exitConfig, "invalid configuration"},
		{[]string{"--config", cfg, "--bind-address", "127.0.3.1", "--bind-port", busyPort}, exitRuntime, "address already in use"},
	} {
		var stdout, stderr bytes.Buffer

		code := Main(tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d with %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}
