package balancer

import (
	"io"
	"net"
	"testing"
	"time"
)

// Micro-benchmarks of the hot paths; run with `make bench-go`. They report
// time and allocations, and assert nothing.

// BenchmarkRelayRoundTrip is one 64-byte request and its answer over an
// established proxied connection: the relay loop's per-message path.
func BenchmarkRelayRoundTrip(b *testing.B) {
	up := serveEach(b, func(c net.Conn) { defer c.Close(); _, _ = io.Copy(c, c) })
	bal := startOn(b, listen(b), quiet, false, up)

	c, err := net.DialTimeout("tcp", bal.Addr().String(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	buf := make([]byte, 64)

	b.ReportAllocs()

	for b.Loop() {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}

		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRelayBulk streams from the upstream to the client: the splice
// path. b.SetBytes makes it report throughput.
func BenchmarkRelayBulk(b *testing.B) {
	const chunk = 1 << 20

	up := serveEach(b, func(c net.Conn) {
		defer c.Close()

		block := make([]byte, chunk)
		for {
			if _, err := c.Write(block); err != nil {
				return
			}
		}
	})
	bal := startOn(b, listen(b), quiet, false, up)

	c, err := net.DialTimeout("tcp", bal.Addr().String(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	buf := make([]byte, chunk)

	b.SetBytes(chunk)
	b.ReportAllocs()

	for b.Loop() {
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConnectAndRoundTrip is the whole per-connection path: accept,
// pick, dial, a 64-byte exchange, close.
func BenchmarkConnectAndRoundTrip(b *testing.B) {
	up := serveEach(b, func(c net.Conn) { defer c.Close(); _, _ = io.Copy(c, c) })

	bal := startOn(b, listen(b), quiet, false, up)
	msg := make([]byte, 64)
	buf := make([]byte, 64)

	b.ReportAllocs()

	for b.Loop() {
		c, err := net.DialTimeout("tcp", bal.Addr().String(), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}

		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}

		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}

		c.Close()
	}
}
