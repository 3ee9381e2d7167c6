package main

import (
	"bytes"
	"net"
	"net/http"
	"testing"
	"time"
)

// `status` prints what the health port answers; whatever holds that port
// cannot make it write control characters to the terminal.
func TestStatusEscapesWhatTheHealthPortSays(t *testing.T) {
	t.Parallel()

	ln, err := net.Listen("tcp", "127.0.3.20:0")
	if err != nil {
		t.Fatal(err)
	}

	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"version": "1\u001b]0;owned\u0007", "listen": "` + "\u009b2J\u202e" + `",
			"upstreams": [{"address": "\u001b[31mred", "sources": ["\u001b[1m"], "last_error": "` + "\x7f" + `"}]}`))
	})}

	go func() { _ = srv.Serve(ln) }()

	defer srv.Close()

	for _, args := range [][]string{
		{"status", "--url", "http://" + ln.Addr().String()},
		{"status", "--json", "--url", "http://" + ln.Addr().String()},
	} {
		var stdout, stderr bytes.Buffer

		if code := Main(args, &stdout, &stderr); code != exitOK {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr.String())
		}

		for i, r := range stdout.String() {
			if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x202e {
				t.Fatalf("%v: control character %U at byte %d:\n%q", args, r, i, stdout.String())
			}
		}

		if !bytes.Contains(stdout.Bytes(), []byte(`\u001b[31mred`)) && !bytes.Contains(stdout.Bytes(), []byte(`\x1b[31mred`)) {
			t.Fatalf("%v: the address is not shown, escaped:\n%s", args, stdout.String())
		}
	}
}
