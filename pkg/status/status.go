// Package status is the /status document, the client that fetches it and
// the table that `extractedprism status` prints.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lexfrei/extractedprism/pkg/terminal"
	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// Document is what /status serves.
type Document struct {
	Version   string    `json:"version"`
	Ready     bool      `json:"ready"`
	Listen    string    `json:"listen"`
	StartedAt time.Time `json:"started_at"`
	Discovery string    `json:"discovery"`
	// FailOpen: no upstream passes its checks, so new connections go to
	// any that accepts them and none is reset.
	FailOpen  bool              `json:"fail_open"`
	Upstreams []upstream.Status `json:"upstreams"`
}

// Summary is the one-line state, also used as the systemd STATUS.
func (d Document) Summary() string {
	healthy := 0

	for _, u := range d.Upstreams {
		if u.Healthy {
			healthy++
		}
	}

	s := fmt.Sprintf("%d/%d upstreams healthy; discovery: %s", healthy, len(d.Upstreams), d.Discovery)
	if d.FailOpen {
		s += "; FAILING OPEN: no upstream passes its checks, connections go to any that accepts"
	}

	return s
}

// MaxBytes bounds the /status answer that is read: a document of a
// thousand upstreams is ~400 KiB.
const MaxBytes = 1 << 20

// ErrTooLarge marks an answer over MaxBytes.
var ErrTooLarge = fmt.Errorf("status answer larger than %d bytes", MaxBytes)

// newClient reads the local health server only: no proxy, no redirects
// (whatever holds the port could send the request elsewhere), bounded
// headers.
func newClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxResponseHeaderBytes: 64 << 10, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Fetch reads the document from a health server base URL. The raw answer
// comes back re-encoded (terminal.EscapeJSON), safe to print; the answer
// is read up to MaxBytes.
func Fetch(ctx context.Context, baseURL string) (Document, []byte, error) {
	var doc Document

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/status", nil)
	if err != nil {
		return doc, nil, fmt.Errorf("status request: %w", err)
	}

	resp, err := newClient().Do(req)
	if err != nil {
		return doc, nil, fmt.Errorf("is extractedprism running? %w", err)
	}
	defer resp.Body.Close()

	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBytes+1))
	if err != nil {
		return doc, nil, fmt.Errorf("reading status: %w", err)
	}

	if len(raw) > MaxBytes {
		return doc, nil, fmt.Errorf("%s: %w", req.URL, ErrTooLarge)
	}

	if resp.StatusCode != http.StatusOK {
		return doc, nil, fmt.Errorf("status: HTTP %d from %s", resp.StatusCode, req.URL)
	}

	if err := json.Unmarshal(raw, &doc); err != nil {
		return doc, nil, fmt.Errorf("decoding status from %s: %s", req.URL, terminal.Escape(err.Error()))
	}

	safe, err := terminal.EscapeJSON(raw)
	if err != nil {
		return doc, nil, fmt.Errorf("decoding status from %s: %w", req.URL, err)
	}

	return doc, safe, nil
}

// WriteTable prints the document for people. Every string in it is
// escaped (terminal.Escape): the document comes from whatever answers on
// the health port.
func WriteTable(w io.Writer, d Document, now time.Time) error {
	esc := terminal.Escape

	fmt.Fprintf(w, "extractedprism %s on %s, up %s: %s\n\n",
		esc(d.Version), esc(d.Listen), now.Sub(d.StartedAt).Round(time.Second), esc(d.Summary()))

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSOURCE\tSTATE\tSCORE\tTIER\tCHECK\tACTIVE\tTOTAL\tSINCE\tLAST ERROR")

	for _, u := range d.Upstreams {
		state := "down"
		if u.Healthy {
			state = "up"
		}

		fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%d\t%.1fms\t%d\t%d\t%s\t%s\n",
			esc(u.Address), esc(strings.Join(u.Sources, ",")), state, u.Score, u.Tier, u.LatencyMillis,
			u.ActiveConnections, u.TotalConnections, now.Sub(u.LastChange).Round(time.Second), esc(u.LastError))
	}

	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}

	return nil
}
