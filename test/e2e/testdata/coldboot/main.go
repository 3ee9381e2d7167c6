// Command coldboot is the cold-boot test's (test/e2e/coldboot.sh) stand-in
// API server and its kubelet-like client. Standard library only, built
// static by the script.
//
//	coldboot pki DIR SAN...
//	    writes DIR/ca.crt, DIR/server.crt and DIR/server.key: a CA and a
//	    serving certificate for the SANs (IP addresses or DNS names).
//
//	coldboot serve -name a -listen 127.0.0.11:6443 -dir DIR -stamp FILE
//	    an HTTPS server with the certificate from DIR, answering like an API
//	    server that has just come back: /readyz is 500 until -ready-after has
//	    passed, then 200; every other path is 200 with {"upstream":"NAME"}
//	    and the header X-Upstream: NAME. Once it accepts connections it
//	    writes the time (Unix nanoseconds) to FILE, so the script can time
//	    the proxy from that moment. Unlike a kube-apiserver, which accepts
//	    connections seconds before it answers them, it answers at once.
//
//	coldboot poll -ca DIR/ca.crt -out FILE
//	    what kubelet does after a reboot: every -interval, a new connection
//	    to 127.0.0.1:7445, a TLS handshake verified against the CA for
//	    kubernetes.default.svc, GET /version, the answer read; each attempt
//	    bounded by -timeout. One line per attempt is appended to FILE:
//	    "START_NS END_NS RESULT DETAIL", RESULT one of ok (DETAIL: the HTTP
//	    status and the upstream's name), refused, closed (EOF or reset:
//	    the proxy had no upstream to offer), timeout, error.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)

	if len(os.Args) < 2 {
		log.Fatal("usage: coldboot pki|serve|poll ...")
	}

	var err error

	switch os.Args[1] {
	case "pki":
		err = pki(os.Args[2:])
	case "serve":
		err = serve(os.Args[2:])
	case "poll":
		err = poll(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}

	if err != nil {
		log.Fatal(err)
	}
}

// pki writes a CA and a serving certificate signed by it.
func pki(args []string) error {
	if len(args) < 2 {
		return errors.New("usage: coldboot pki DIR SAN...")
	}

	dir := args[0]

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}

	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "coldboot e2e CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}

	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}

	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}

	for _, san := range args[1:] {
		if ip := net.ParseIP(san); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, san)
		}
	}

	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		return err
	}

	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}

	files := []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{
		{"ca.crt", "CERTIFICATE", caDER, 0o644},
		{"server.crt", "CERTIFICATE", der, 0o644},
		{"server.key", "EC PRIVATE KEY", keyDER, 0o600},
	}

	for _, f := range files {
		data := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(filepath.Join(dir, f.name), data, f.mode); err != nil {
			return err
		}
	}

	return nil
}

// serve runs the stand-in API server until SIGTERM.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	name := fs.String("name", "", "name answered in every response")
	listen := fs.String("listen", "", "address to listen on")
	dir := fs.String("dir", "", "directory with server.crt and server.key")
	stamp := fs.String("stamp", "", "file to write the time it accepts connections to")
	readyAfter := fs.Duration("ready-after", 0, "/readyz fails until this long after listening")

	if err := fs.Parse(args); err != nil {
		return err
	}

	cert, err := tls.LoadX509KeyPair(filepath.Join(*dir, "server.crt"), filepath.Join(*dir, "server.key"))
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}

	// From here the kernel completes handshakes into the backlog: this is
	// when the API server is back, as far as any client can tell.
	accepting := time.Now()
	if err := writeAtomic(*stamp, strconv.FormatInt(accepting.UnixNano(), 10)+"\n"); err != nil {
		return err
	}

	log.Printf("%s accepting on %s at %d", *name, ln.Addr(), accepting.UnixNano())

	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if time.Since(accepting) < *readyAfter {
			http.Error(w, "[-]poststarthook/not-yet failed: reason withheld", http.StatusInternalServerError)

			return
		}

		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Upstream", *name)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"upstream\":%q}\n", *name)
	})

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()

		_ = srv.Shutdown(ctx)
	}()

	err = srv.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}

	return err
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}

	return os.Rename(tmp, path)
}

// poll is the client loop; it runs until SIGTERM or -for has passed.
func poll(args []string) error {
	fs := flag.NewFlagSet("poll", flag.ContinueOnError)
	target := fs.String("target", "127.0.0.1:7445", "address to connect to")
	caFile := fs.String("ca", "", "CA certificate to verify the API server with")
	serverName := fs.String("server-name", "kubernetes.default.svc", "name the certificate is checked for")
	interval := fs.Duration("interval", 100*time.Millisecond, "pause between the end of an attempt and the next")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on one attempt: connect, handshake, request, answer")
	out := fs.String("out", "", "file to append one line per attempt to")
	duration := fs.Duration("for", 15*time.Minute, "stop after this long")

	if err := fs.Parse(args); err != nil {
		return err
	}

	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %s", *caFile)
	}

	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()

	cfg := &tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS12}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	end := time.After(*duration)

	for {
		start := time.Now()
		result, detail := attempt(*target, cfg, *timeout)
		done := time.Now()

		// One write per line (O_APPEND): a reader never sees half a line.
		line := fmt.Sprintf("%d %d %s %s\n", start.UnixNano(), done.UnixNano(), result, detail)
		if _, err := f.WriteString(line); err != nil {
			return err
		}

		select {
		case <-stop:
			return nil
		case <-end:
			return nil
		case <-time.After(*interval):
		}
	}
}

// attempt makes one request through a new connection and classifies the
// outcome.
func attempt(target string, cfg *tls.Config, timeout time.Duration) (result, detail string) {
	deadline := time.Now().Add(timeout)

	raw, err := (&net.Dialer{Deadline: deadline}).Dial("tcp", target)
	if err != nil {
		return classify(err)
	}
	defer raw.Close()

	_ = raw.SetDeadline(deadline)

	conn := tls.Client(raw, cfg.Clone())
	if err := conn.Handshake(); err != nil {
		return classify(err)
	}

	if _, err := io.WriteString(conn, "GET /version HTTP/1.1\r\nHost: kubernetes.default.svc\r\nConnection: close\r\n\r\n"); err != nil {
		return classify(err)
	}

	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return classify(err)
	}
	defer resp.Body.Close()

	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return classify(err)
	}

	name := resp.Header.Get("X-Upstream")
	if name == "" {
		name = "-"
	}

	return "ok", fmt.Sprintf("%d:%s", resp.StatusCode, name)
}

func classify(err error) (result, detail string) {
	var ne net.Error

	detail = strings.ReplaceAll(err.Error(), " ", "_")

	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused", detail
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE):
		return "closed", detail
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout", detail
	default:
		return "error", detail
	}
}
