package balancer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// echoServer echoes through a small buffer, so it is slow to drain too.
func echoServer(t *testing.T) string {
	t.Helper()

	return serveEach(t, func(c net.Conn) {
		defer c.Close()
		// Hide ReadFrom/WriteTo: a plain copy, no splicing.
		_, _ = io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4096))
	})
}

// echoed sends size random bytes through b to an echo upstream while
// reading the echo slowly, and checks that every byte came back in order.
func echoed(t *testing.T, b *rig, size int) {
	t.Helper()

	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	data := randomBytes(t, size)
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

	if want := sha256.Sum256(data); n != int64(size) || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echo of %d bytes came back as %d bytes with another hash", size, n)
	}
}

// Random bytes both ways at once through an echo upstream, with a client
// that reads slowly: what arrives is what was sent, byte for byte.
func TestStreamIntegrityUnderBackPressure(t *testing.T) {
	t.Parallel()

	echo := echoServer(t)

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
			echoed(t, b, tc.size)
		})
	}
}

// What the kernel may do at any time, injected at random (seeded, the seed
// logged): interrupted syscalls, short writes and splices, no descriptor
// for a pipe. Streams stay whole, and every descriptor the proxy opened
// is closed again.
func TestSyscallFaults(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)

	var (
		mu  sync.Mutex
		rng = mrand.New(mrand.NewPCG(seed, seed))
	)

	chance := func(p float64) bool {
		mu.Lock()
		defer mu.Unlock()

		return rng.Float64() < p
	}
	shorter := func(n int) int {
		mu.Lock()
		defer mu.Unlock()

		return 1 + rng.IntN(n)
	}

	faulty := &sys{
		read: func(fd int, p []byte) (int, error) {
			if chance(0.1) {
				return -1, unix.EINTR
			}

			return kernel.read(fd, p)
		},
		write: func(fd int, p []byte) (int, error) {
			switch {
			case chance(0.1):
				return -1, unix.EINTR
			case len(p) > 1 && chance(0.3):
				p = p[:shorter(len(p)-1)]
			}

			return kernel.write(fd, p)
		},
		splice: func(rfd, wfd, n int) (int64, error) {
			switch {
			case chance(0.1):
				return -1, unix.EINTR
			case n > 1 && chance(0.3):
				n = shorter(n - 1)
			}

			return kernel.splice(rfd, wfd, n)
		},
		pipe: func(fds []int) error {
			if chance(0.5) {
				return unix.EMFILE
			}

			return kernel.pipe(fds)
		},
	}

	echo := echoServer(t)
	before := openFDs(t)

	func() {
		r := build(t, Options{Listener: listen(t), Loops: 2}, quiet, echo)
		r.sys = faulty
		serve(t, r, true)

		var wg sync.WaitGroup
		for _, size := range []int{100, 70_000, 4<<20 + 3} {
			wg.Go(func() { echoed(t, r, size) })
		}

		wg.Wait()

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()

		r.prober.Stop()
		r.Shutdown(ctx)
	}()

	waitFor(t, "every descriptor of the proxy to be closed", func() bool { return openFDs(t) <= before })
}
