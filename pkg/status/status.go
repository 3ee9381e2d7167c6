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

// Fetch reads the document from a health server base URL.
func Fetch(ctx context.Context, baseURL string) (Document, []byte, error) {
	var doc Document

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/status", nil)
	if err != nil {
		return doc, nil, fmt.Errorf("status request: %w", err)
	}

	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return doc, nil, fmt.Errorf("is extractedprism running? %w", err)
	}
	defer resp.Body.Close()

	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return doc, nil, fmt.Errorf("reading status: %w", err)
	}

	if resp.StatusCode != http.StatusOK {
		return doc, raw, fmt.Errorf("status: HTTP %d from %s", resp.StatusCode, req.URL)
	}

	if err := json.Unmarshal(raw, &doc); err != nil {
		return doc, raw, fmt.Errorf("decoding status from %s: %w", req.URL, err)
	}

	return doc, raw, nil
}

// WriteTable prints the document for people.
func WriteTable(w io.Writer, d Document, now time.Time) error {
	fmt.Fprintf(w, "extractedprism %s on %s, up %s: %s\n\n",
		d.Version, d.Listen, now.Sub(d.StartedAt).Round(time.Second), d.Summary())

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tSOURCE\tSTATE\tSCORE\tTIER\tCHECK\tACTIVE\tTOTAL\tSINCE\tLAST ERROR")

	for _, u := range d.Upstreams {
		state := "down"
		if u.Healthy {
			state = "up"
		}

		fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%d\t%.1fms\t%d\t%d\t%s\t%s\n",
			u.Address, strings.Join(u.Sources, ","), state, u.Score, u.Tier, u.LatencyMillis,
			u.ActiveConnections, u.TotalConnections, now.Sub(u.LastChange).Round(time.Second), u.LastError)
	}

	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing status: %w", err)
	}

	return nil
}
