package balancer

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"testing"
)

func randomBytes(tb testing.TB, n int) []byte {
	tb.Helper()

	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}

	return b
}

// slowReader reads in small pieces, so the proxy's writes to this side
// fill the socket buffer and would block: the back-pressure paths (bytes
// kept pending or in a pipe, writability watched) run over and over.
type slowReader struct{ r io.Reader }

func (s slowReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 1024)]) }

// Random bytes both ways at once through an echo upstream, with a client
// that reads slowly: what arrives is what was sent, byte for byte.
func TestStreamIntegrityUnderBackPressure(t *testing.T) {
	t.Parallel()

	echo := serveEach(t, func(c net.Conn) {
		defer c.Close()
		// Hide ReadFrom/WriteTo: a plain copy with a small buffer keeps
		// the echo slow to drain as well.
		_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4096))
	})

	for _, tc := range []struct {
		loops int
		size  int
	}{
		{1, 100},       // one message: copied
		{1, 8 << 20},   // bulk: spliced, and blocked both ways
		{2, 3<<20 + 7}, // not a multiple of any buffer
	} {
		t.Run(fmt.Sprintf("loops=%d/size=%d", tc.loops, tc.size), func(t *testing.T) {
			t.Parallel()

			b := serve(t, build(t, Options{Listener: listen(t), Loops: tc.loops}, quiet, echo), true)

			c, err := net.Dial("tcp", b.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			data := randomBytes(t, tc.size)
			sent := make(chan error, 1)

			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.(*net.TCPConn).CloseWrite()
				}

				sent <- err
			}()

			h := sha256.New()

			n, err := io.Copy(h, slowReader{c})
			if err != nil {
				t.Fatalf("reading the echo: %v", err)
			}

			if err := <-sent; err != nil {
				t.Fatalf("sending: %v", err)
			}

			if want := sha256.Sum256(data); n != int64(tc.size) || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("echo of %d bytes came back as %d bytes with another hash", tc.size, n)
			}
		})
	}
}
