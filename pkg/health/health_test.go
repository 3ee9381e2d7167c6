package health

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func checks() Checks {
	return Checks{
		Alive:  func() error { return nil },
		Ready:  func() error { return nil },
		Status: func() any { return map[string]string{"ok": "yes"} },
	}
}

// serve runs a server with opts on a kernel-chosen port of 127.0.6.1.
func serve(t *testing.T, opts Options) (*Server, string) {
	t.Helper()

	ln, err := net.Listen("tcp", "127.0.6.1:0")
	if err != nil {
		t.Fatal(err)
	}

	s := New(checks(), zaptest.NewLogger(t), opts)
	done := make(chan struct{})

	go func() { defer close(done); s.Run(ln, "") }()

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()

		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}

		<-done
	})

	return s, ln.Addr().String()
}

// keepAlive is a client connection that made one request and keeps the
// connection open, idle, as an HTTP/1.1 client does.
type keepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func request(t *testing.T, addr string) (*keepAlive, error) {
	t.Helper()

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}

	k := &keepAlive{c: c, r: bufio.NewReader(c)}
	if err := k.get(); err != nil {
		c.Close()

		return nil, err
	}

	return k, nil
}

func (k *keepAlive) get() error {
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))

	if _, err := io.WriteString(k.c, "GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		return err
	}

	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		return errors.New("bad answer: " + resp.Status + " " + string(body))
	}

	return nil
}

// closedByServer waits until the server closes the connection (a read
// ends with EOF or a reset), at most within.
func (k *keepAlive) closedByServer(within time.Duration) bool {
	_ = k.c.SetReadDeadline(time.Now().Add(within))

	_, err := k.r.ReadByte()

	var ne net.Error

	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// Many idle keep-alive connections: the server never holds more than
// MaxConns; each new one closes the oldest idle one instead of waiting,
// so a probe is answered at once however many idle connections a
// neighbour opened.
func TestIdleConnectionsAreBounded(t *testing.T) {
	t.Parallel()

	const limit, clients = 16, 1000

	s, addr := serve(t, Options{MaxConns: limit})

	var open []*keepAlive

	defer func() {
		for _, k := range open {
			k.c.Close()
		}
	}()

	for i := range clients {
		k, err := request(t, addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}

		open = append(open, k)

		if n := s.Conns(); n > limit {
			t.Fatalf("after %d connections the server holds %d, more than %d", i+1, n, limit)
		}
	}

	// The server closed all but at most limit of them, the oldest idle
	// first; those it kept still serve, on the same connection. (Which
	// ones exactly depends on when each went idle on the server's side.)
	served := 0

	for i, k := range open {
		if err := k.get(); err == nil {
			served++
		} else if i >= clients-1 {
			t.Fatalf("the newest connection is not served: %v", err)
		}
	}

	if served > limit || served == 0 {
		t.Errorf("%d of %d idle connections still served, want 1 to %d", served, clients, limit)
	}

	if st := s.Stats(); st.Evicted < clients-limit {
		t.Errorf("%d evictions counted, want at least %d", st.Evicted, clients-limit)
	}
}

// A client that sends part of a request and stalls (slowloris) holds no
// more than an idle one: it is closed to make room as well.
func TestStalledRequestsMakeRoom(t *testing.T) {
	t.Parallel()

	const limit = 4

	s, addr := serve(t, Options{MaxConns: limit})

	var stalled []*keepAlive

	for range limit {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		if _, err := io.WriteString(c, "GET /hea"); err != nil {
			t.Fatal(err)
		}

		stalled = append(stalled, &keepAlive{c: c, r: bufio.NewReader(c)})
	}

	waitFor(t, func() bool { return s.Conns() == limit })

	k, err := request(t, addr)
	if err != nil {
		t.Fatalf("a request after %d stalled ones: %v", limit, err)
	}
	k.c.Close()

	if !stalled[0].closedByServer(5 * time.Second) {
		t.Fatal("the oldest stalled connection was not closed to make room")
	}
}

// Connections in the middle of a request (here: a handler that takes its
// time) are not closed to make room: a new connection waits in the listen
// backlog until one of them ends, and is then served.
func TestBusyConnectionsMakeNewOnesWait(t *testing.T) {
	t.Parallel()

	const limit = 4

	release := make(chan struct{})
	c := checks()
	c.Status = func() any { <-release; return "done" }

	ln, err := net.Listen("tcp", "127.0.6.4:0")
	if err != nil {
		t.Fatal(err)
	}

	s := New(c, zaptest.NewLogger(t), Options{MaxConns: limit})

	var wg sync.WaitGroup

	wg.Go(func() { s.Run(ln, "") })

	defer func() {
		_ = s.Shutdown(context.Background())
		wg.Wait()
	}()

	statusGet := func() error {
		resp, err := http.Get("http://" + ln.Addr().String() + "/status") //nolint:noctx // test
		if err != nil {
			return err
		}
		defer resp.Body.Close()

		_, err = io.ReadAll(resp.Body)

		return err
	}

	busy := make(chan error, limit)
	for range limit {
		go func() { busy <- statusGet() }()
	}

	waitFor(t, func() bool { return s.Stats().Busy == limit })

	extra := make(chan error, 1)

	go func() {
		k, err := request(t, ln.Addr().String())
		if err == nil {
			k.c.Close()
		}
		extra <- err
	}()

	waitFor(t, func() bool { return s.Stats().Waited == 1 })

	select {
	case err := <-extra:
		t.Fatalf("a new connection was served while %d requests were in progress: %v", limit, err)
	default:
	}

	close(release)

	if err := <-extra; err != nil {
		t.Fatalf("the waiting connection: %v", err)
	}

	for range limit {
		if err := <-busy; err != nil {
			t.Fatal(err)
		}
	}

	if st := s.Stats(); st.Evicted != 0 {
		t.Errorf("%d busy connections evicted", st.Evicted)
	}
}

// waitFor polls cond, which follows the server's own goroutines, for at
// most 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()

	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5 s")
		}

		time.Sleep(2 * time.Millisecond)
	}
}

// The timeouts close what a client leaves hanging.
func TestTimeouts(t *testing.T) {
	t.Parallel()

	_, addr := serve(t, Options{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: 200 * time.Millisecond})

	t.Run("idle keep-alive", func(t *testing.T) {
		k, err := request(t, addr)
		if err != nil {
			t.Fatal(err)
		}
		defer k.c.Close()

		if !k.closedByServer(5 * time.Second) {
			t.Fatal("idle keep-alive connection not closed after IdleTimeout")
		}
	})

	t.Run("silent", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		k := &keepAlive{c: c, r: bufio.NewReader(c)}
		if !k.closedByServer(5 * time.Second) {
			t.Fatal("a connection that never sent a request was not closed after ReadHeaderTimeout")
		}
	})

	t.Run("huge header", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: h\r\nX: "+strings.Repeat("a", 64<<10)+"\r\n\r\n")

		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()

		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("64 KiB of headers: %s, want 431", resp.Status)
		}
	})
}

// A port that another process holds does not stop the server: it retries
// with backoff and serves once the port is free.
func TestBindRetriedUntilThePortIsFree(t *testing.T) {
	t.Parallel()

	squatter, err := net.Listen("tcp", "127.0.6.2:0")
	if err != nil {
		t.Fatal(err)
	}

	addr := squatter.Addr().String()
	s := New(checks(), zaptest.NewLogger(t), Options{RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	done := make(chan struct{})

	go func() { defer close(done); s.Run(nil, addr) }()

	defer func() {
		_ = s.Shutdown(context.Background())
		<-done
	}()

	waitFor(t, func() bool { return s.BindError() != nil })

	if s.Addr() != nil {
		t.Fatalf("bound to %s while the squatter holds %s", s.Addr(), addr)
	}

	squatter.Close()

	var k *keepAlive

	deadline := time.Now().Add(5 * time.Second)
	for k == nil {
		if time.Now().After(deadline) {
			t.Fatalf("not serving %s after the squatter left: %v", addr, s.BindError())
		}

		if k, err = request(t, addr); err != nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	k.c.Close()

	if s.BindError() != nil || s.Addr() == nil || s.Addr().String() != addr {
		t.Fatalf("after binding: addr %v, bind error %v", s.Addr(), s.BindError())
	}
}

// Shutdown ends a server that is still waiting for its port.
func TestShutdownWhileRetrying(t *testing.T) {
	t.Parallel()

	squatter, err := net.Listen("tcp", "127.0.6.3:0")
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()

	s := New(checks(), zaptest.NewLogger(t), Options{RetryMin: time.Hour})

	var wg sync.WaitGroup

	wg.Go(func() { s.Run(nil, squatter.Addr().String()) })

	waitFor(t, func() bool { return s.BindError() != nil })

	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	wg.Wait()
}
