package balancer

import (
	"io"
	"net"
	"testing"
	"time"
)

// Micro-benchmarks of the hot paths; run with `make bench-go`. They report
// time and allocations, and assert nothing.

func BenchmarkPick(b *testing.B) {
	bal := startOn(b, listen(b), quiet, false, "10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443")

	b.ReportAllocs()

	for b.Loop() {
		if _, err := bal.pick(nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConnBookkeeping(b *testing.B) {
	bal := startOn(b, listen(b), quiet, false, "10.0.0.1:6443")
	c1, c2 := net.Pipe()

	defer c1.Close()
	defer c2.Close()

	n := bal.nodes[0]

	b.ReportAllocs()

	for b.Loop() {
		bal.conns.add(c1)
		bal.conns.attach(c1, c2, n)
		bal.conns.remove(c1)
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
