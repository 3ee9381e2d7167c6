package status

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// hostile is what a process holding the health port could answer.
const hostile = "\x1b]52;c;cm0gLXJmIC8=\x07\x1b[2J\u009b31m\u202e"

func noEscapes(t *testing.T, what string, out []byte) {
	t.Helper()

	for i, r := range string(out) {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x202e {
			t.Fatalf("%s: control character %U at byte %d:\n%q", what, r, i, out)
		}
	}
}

func TestWriteTableEscapes(t *testing.T) {
	t.Parallel()

	doc := Document{
		Version: hostile, Listen: hostile, Discovery: hostile,
		Upstreams: []upstream.Status{{Address: hostile, Sources: []string{hostile}, LastError: hostile}},
	}

	var out bytes.Buffer
	if err := WriteTable(&out, doc, time.Now()); err != nil {
		t.Fatal(err)
	}

	noEscapes(t, "table", out.Bytes())

	if !strings.Contains(out.String(), `\x1b]52;c;`) {
		t.Fatalf("the escape is not shown escaped:\n%s", out.String())
	}
}

// serveOn answers every request on a loopback port with h.
func serveOn(t *testing.T, h http.HandlerFunc) string {
	t.Helper()

	ln, err := net.Listen("tcp", "127.0.6.10:0")
	if err != nil {
		t.Fatal(err)
	}

	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}

	go func() { _ = srv.Serve(ln) }()

	t.Cleanup(func() { srv.Close() })

	return "http://" + ln.Addr().String()
}

func TestFetchBounds(t *testing.T) {
	t.Parallel()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	t.Run("body over the limit", func(t *testing.T) {
		url := serveOn(t, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"version": "`))
			_, _ = w.Write(bytes.Repeat([]byte("a"), MaxBytes))
			_, _ = w.Write([]byte(`"}`))
		})

		if _, _, err := Fetch(ctx, url); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("a %d-byte answer: %v, want ErrTooLarge", MaxBytes+15, err)
		}
	})

	t.Run("redirect not followed", func(t *testing.T) {
		target := serveOn(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"version": "elsewhere"}`)) })
		url := serveOn(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target+"/status", http.StatusFound) })

		doc, _, err := Fetch(ctx, url)
		if err == nil || doc.Version == "elsewhere" {
			t.Fatalf("followed a redirect: %+v, %v", doc, err)
		}
	})

	t.Run("hostile answer, raw", func(t *testing.T) {
		url := serveOn(t, func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"version": "x\u001b[2J", "listen": "` + "\u009b31m \u202e" + `"}`))
		})

		_, raw, err := Fetch(ctx, url)
		if err != nil {
			t.Fatal(err)
		}

		noEscapes(t, "raw document", bytes.ReplaceAll(raw, []byte("\n"), nil))
	})

	t.Run("not JSON", func(t *testing.T) {
		url := serveOn(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("\x1b[2Jnot json")) })

		_, raw, err := Fetch(ctx, url)
		if err == nil {
			t.Fatal("no error for an answer that is not JSON")
		}

		noEscapes(t, "error", []byte(err.Error()))

		if raw != nil {
			t.Fatalf("raw bytes returned for an answer that is not JSON: %q", raw)
		}
	})
}
