// Package health serves the daemon's HTTP endpoints for probes and people:
// /healthz (the daemon's own loops are alive), /readyz (an upstream is
// usable), /status (a JSON document of the upstreams) and /metrics.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
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

// Server is the health HTTP server.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// New returns a server for ln; call Serve to run it.
func New(ln net.Listener, checks Checks, log *zap.Logger) *Server {
	return &Server{
		ln: ln,
		srv: &http.Server{
			Handler:           Handler(checks),
			ReadHeaderTimeout: 5 * time.Second,
			ErrorLog:          zap.NewStdLog(log.Named("health")),
		},
	}
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown; it returns nil after Shutdown.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health server on %s: %w", s.ln.Addr(), err)
	}

	return nil
}

// Shutdown stops the server, letting requests in progress finish until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
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
