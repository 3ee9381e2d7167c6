// Command upstream is a stand-in for an API server in the end-to-end tests:
// for each NAME=ADDRESS argument it listens on ADDRESS, and on every
// accepted connection writes "NAME\n" and then echoes what it reads until
// the client closes. Standard library only, built static by the e2e scripts.
//
//	upstream a=127.0.0.11:6443 b=127.0.0.12:6443
package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func serve(name string, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Printf("%s: accept: %v", name, err)

			return
		}

		go func() {
			defer c.Close()

			if _, err := io.WriteString(c, name+"\n"); err != nil {
				return
			}

			_, _ = io.Copy(c, c)
		}()
	}
}

func main() {
	log.SetFlags(0)

	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: upstream NAME=ADDRESS...")
		os.Exit(2)
	}

	for _, arg := range os.Args[1:] {
		name, addr, ok := strings.Cut(arg, "=")
		if !ok || name == "" || addr == "" {
			log.Fatalf("bad argument %q: want NAME=ADDRESS", arg)
		}

		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("%s: %v", name, err)
		}

		log.Printf("%s listening on %s", name, ln.Addr())

		go serve(name, ln)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
