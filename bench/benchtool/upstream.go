package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// The upstream protocol, one port for both services:
//
//   - a connection whose first 4 bytes are "BULK" is followed by a big-endian
//     uint64 length; the server then writes that many bytes (or until the
//     client goes away) and closes: the bulk-stream server;
//   - anything else is echoed back byte for byte until the client closes:
//     the echo server.
//
// A TCP health check (connect, close) is just an echo connection that ends
// before its first byte.
const bulkMagic = "BULK"

var bulkChunk = make([]byte, 256<<10)

func upstreamMain(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.2:17443", "listen address")
	_ = fs.Parse(args)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}

	fmt.Fprintf(os.Stderr, "upstream listening on %s\n", ln.Addr())

	backoff := 5 * time.Millisecond

	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// EMFILE and friends: wait and retry, never stop serving.
			time.Sleep(backoff)
			backoff = min(backoff*2, time.Second)

			continue
		}

		backoff = 5 * time.Millisecond

		go serveUpstream(c)
	}
}

func serveUpstream(c net.Conn) {
	defer c.Close()

	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}

	if string(hdr[:]) == bulkMagic {
		var lb [8]byte
		if _, err := io.ReadFull(c, lb[:]); err != nil {
			return
		}

		left := binary.BigEndian.Uint64(lb[:])
		for left > 0 {
			n := uint64(len(bulkChunk))
			if left < n {
				n = left
			}

			w, err := c.Write(bulkChunk[:n])
			left -= uint64(w)

			if err != nil {
				return
			}
		}

		return
	}

	if _, err := c.Write(hdr[:]); err != nil {
		return
	}

	buf := make([]byte, 2048)

	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}

		if err != nil {
			return
		}
	}
}
