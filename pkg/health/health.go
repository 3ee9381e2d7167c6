// Package health serves the daemon's HTTP endpoints for probes and people:
// /healthz (the daemon's own loops are alive), /readyz (an upstream is
// usable), /status (a JSON document of the upstreams) and /metrics.
//
// The server is never a reason for the daemon to stop proxying: a port that
// cannot be bound (another process holds it) is retried with backoff, and
// every resource a client can hold is bounded (see Options).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Checks are the questions the server asks the daemon on each request.
type Checks struct {
	// Alive returns nil while the daemon's loops make progress.
	Alive func() error
	// Ready returns nil while at least one upstream is usable.
	Ready func() error
	// Status returns the document served as JSON on /status.
	Status func() any
	// Metrics serves /metrics; nil leaves it out.
	Metrics http.Handler
}

// Options bound the server; zero values take the defaults below.
type Options struct {
	// MaxConns is the most connections held at once (default 64). At the
	// limit a new connection closes the oldest one that is idle or has
	// not sent a byte yet; when all are in the middle of a request, it
	// waits in the listen backlog until one ends (the timeouts bound that).
	MaxConns int
	// ReadHeaderTimeout (5 s), ReadTimeout (10 s), WriteTimeout (10 s) and
	// IdleTimeout (30 s) are http.Server's.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to bind a
	// port that is taken (1 s, doubling up to 30 s).
	RetryMin, RetryMax time.Duration
}

// Defaults of Options.
const (
	DefaultMaxConns          = 64
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 10 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
	DefaultRetryMin          = time.Second
	DefaultRetryMax          = 30 * time.Second
	// MaxHeaderBytes bounds a request's headers; more is answered 431.
	MaxHeaderBytes = 8 << 10
)

func (o Options) withDefaults() Options {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}

	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}

	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.ReadTimeout, DefaultReadTimeout)
	def(&o.WriteTimeout, DefaultWriteTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.RetryMin, DefaultRetryMin)
	def(&o.RetryMax, DefaultRetryMax)

	return o
}

// Server is the health HTTP server.
type Server struct {
	srv   *http.Server
	log   *zap.Logger
	opts  Options
	conns *tracker
	stop  chan struct{} // closed by Shutdown

	mu       sync.Mutex
	ln       net.Listener // while serving
	bindErr  error        // while the port cannot be bound
	shutdown bool
}

// New returns a server; call Run to serve.
func New(checks Checks, log *zap.Logger, opts Options) *Server {
	opts = opts.withDefaults()
	log = log.Named("health")
	conns := newTracker(opts.MaxConns, log)

	return &Server{
		log:   log,
		opts:  opts,
		conns: conns,
		stop:  make(chan struct{}),
		srv: &http.Server{
			Handler:           Handler(checks),
			ReadHeaderTimeout: opts.ReadHeaderTimeout,
			ReadTimeout:       opts.ReadTimeout,
			WriteTimeout:      opts.WriteTimeout,
			IdleTimeout:       opts.IdleTimeout,
			MaxHeaderBytes:    MaxHeaderBytes,
			ConnState:         conns.state,
			ErrorLog:          zap.NewStdLog(log),
		},
	}
}

// Addr is the address the server listens on; nil while it is not bound.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.ln == nil {
		return nil
	}

	return s.ln.Addr()
}

// BindError is why the port cannot be bound, while it cannot; else nil.
func (s *Server) BindError() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.bindErr
}

// Conns is the number of connections the server holds.
func (s *Server) Conns() int { return s.conns.len() }

// Stats counts what the connection limit did.
func (s *Server) Stats() Stats { return s.conns.stats() }

// Run serves ln, or, when ln is nil, addr, until Shutdown. A port that
// cannot be bound is retried with backoff (RetryMin doubling to RetryMax)
// and so is a listener that fails: Run returns only after Shutdown.
func (s *Server) Run(ln net.Listener, addr string) {
	delay := s.opts.RetryMin
	failures := 0

	for {
		if ln == nil {
			var err error
			if ln, err = net.Listen("tcp", addr); err != nil {
				failures++
				s.bindFailed(err, failures, delay)

				if !s.wait(delay) {
					return
				}

				delay = min(2*delay, s.opts.RetryMax)

				continue
			}

			if failures > 0 {
				s.log.Info("health server listening now", zap.String("addr", addr), zap.Int("failed_attempts", failures))
			}
		}

		err := s.serve(ln)
		if err == nil {
			return
		}

		s.log.Error("health server failed; binding its port again", zap.Error(err))
		ln, delay, failures = nil, s.opts.RetryMin, 0

		if addr == "" || !s.wait(delay) {
			return
		}
	}
}

// bindFailed records a failed bind; the first failure and every new kind
// of failure are logged, repeats only at debug level.
func (s *Server) bindFailed(err error, failures int, retry time.Duration) {
	s.mu.Lock()
	prev := s.bindErr
	s.bindErr = err
	s.mu.Unlock()

	if prev != nil && prev.Error() == err.Error() {
		s.log.Debug("health server still cannot listen", zap.Error(err), zap.Int("attempts", failures), zap.Duration("retry_in", retry))

		return
	}

	s.log.Error("health server cannot listen; retrying with backoff. The proxy serves meanwhile; "+
		"/healthz, /readyz, /status and /metrics are unavailable until the port is free", zap.Error(err), zap.Duration("retry_in", retry))
}

// wait sleeps for d; false if Shutdown came first.
func (s *Server) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()

	select {
	case <-s.stop:
		return false
	case <-t.C:
		return true
	}
}

// serve serves ln until Shutdown (nil) or until the listener fails.
func (s *Server) serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		_ = ln.Close()

		return nil
	}

	s.ln, s.bindErr = ln, nil
	s.mu.Unlock()

	err := s.srv.Serve(s.conns.listener(ln))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}

	s.mu.Lock()
	s.ln = nil
	s.mu.Unlock()

	return fmt.Errorf("health server on %s: %w", ln.Addr(), err)
}

// Shutdown stops the server, letting requests in progress finish until ctx
// ends; a Run still waiting for its port returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.shutdown {
		s.shutdown = true
		close(s.stop)
	}
	s.mu.Unlock()

	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("stopping health server: %w", err)
	}

	return nil
}

// Handler routes the health endpoints.
func Handler(c Checks) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", probe(c.Alive))
	mux.HandleFunc("GET /readyz", probe(c.Ready))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")

		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(c.Status())
	})

	if c.Metrics != nil {
		mux.Handle("GET /metrics", c.Metrics)
	}

	return mux
}

func probe(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")

		if err := check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ok: %v\n", err)

			return
		}

		fmt.Fprintln(w, "ok")
	}
}
