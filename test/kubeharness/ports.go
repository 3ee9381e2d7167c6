package kubeharness

import (
	"errors"
	"fmt"
	"net"
)

// freePorts asks the kernel for n distinct free TCP ports on host. All
// listeners stay open until every port is known, so the kernel cannot hand
// out the same port twice; there is still a small window between closing and
// the child binding, which is acceptable for tests.
func freePorts(host string, n int) ([]int, error) {
	listeners := make([]net.Listener, 0, n)

	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()

	ports := make([]int, 0, n)

	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("find a free port on %s: %w", host, err)
		}

		listeners = append(listeners, l)

		addr, ok := l.Addr().(*net.TCPAddr)
		if !ok {
			return nil, errors.New("find a free port: listener has no TCP address")
		}

		ports = append(ports, addr.Port)
	}

	return ports, nil
}
