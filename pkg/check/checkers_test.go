package check

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestHTTPSCheck(t *testing.T) {
	t.Parallel()

	var code atomic.Int32
	code.Store(http.StatusOK)

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)

			return
		}

		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()

	tlsConfig := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	c := NewHTTPSCheck(tlsConfig, "/readyz")
	addr := srv.Listener.Addr().String()

	for _, tc := range []struct {
		code int
		ok   bool
	}{
		{http.StatusOK, true},
		{http.StatusUnauthorized, true}, // anonymous access off: up, as far as TCP would know
		{http.StatusForbidden, true},
		{http.StatusServiceUnavailable, false}, // graceful shutdown: /readyz red
		{http.StatusInternalServerError, false},
	} {
		code.Store(int32(tc.code))

		err := c.Check(context.Background(), addr)
		if (err == nil) != tc.ok {
			t.Errorf("HTTP %d: Check() = %v, want ok=%v", tc.code, err, tc.ok)
		}
	}

	// An untrusted certificate fails.
	strict := NewHTTPSCheck(&tls.Config{MinVersion: tls.VersionTLS12}, "/readyz")
	if err := strict.Check(context.Background(), addr); err == nil {
		t.Error("a certificate from an unknown CA passed")
	}
}

// The second check resumes the first one's TLS session: half the API
// server's CPU of a full handshake.
func TestHTTPSCheckResumesTLS(t *testing.T) {
	t.Parallel()

	var resumed atomic.Int32

	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS.DidResume {
			resumed.Add(1)
		}
	}))
	defer srv.Close()

	c := NewHTTPSCheck(srv.Client().Transport.(*http.Transport).TLSClientConfig, "/readyz")
	for range 3 {
		if err := c.Check(t.Context(), srv.Listener.Addr().String()); err != nil {
			t.Fatal(err)
		}
	}

	if got := resumed.Load(); got != 2 {
		t.Fatalf("%d of 3 checks resumed a TLS session, want 2", got)
	}
}
