// Command extractedprism is a per-node TCP load balancer that gives every
// Kubernetes node a highly available API server on 127.0.0.1:7445.
package main

import (
	"os"
)

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}
