package kubeharness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// WatchEvent is one event of a Kubernetes watch stream.
type WatchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

// StatusCode returns the HTTP-style code of an ERROR event's Status object
// (410 when the requested resourceVersion was compacted), or 0.
func (e WatchEvent) StatusCode() int {
	if e.Type != "ERROR" {
		return 0
	}

	var st struct {
		Code int `json:"code"`
	}

	if json.Unmarshal(e.Object, &st) != nil {
		return 0
	}

	return st.Code
}

// WatchFor watches collectionPath (e.g. the EndpointSlice collection of
// "default") from resourceVersion for timeoutSeconds, server-side, and
// returns every event received. It is a bounded, blocking call on purpose:
// enough to check what a watch sees, without a streaming client.
func (c *Client) WatchFor(ctx context.Context, collectionPath, resourceVersion string, timeoutSeconds int, fieldSelector string) ([]WatchEvent, error) {
	q := url.Values{}
	q.Set("watch", "1")
	q.Set("resourceVersion", resourceVersion)
	q.Set("timeoutSeconds", strconv.Itoa(timeoutSeconds))

	if fieldSelector != "" {
		q.Set("fieldSelector", fieldSelector)
	}

	// The client's overall request timeout must outlast the server-side one.
	hc := *c.HTTP
	hc.Timeout = time.Duration(timeoutSeconds)*time.Second + requestTimeout
	wc := *c
	wc.HTTP = &hc

	data, err := wc.Do(ctx, http.MethodGet, collectionPath+"?"+q.Encode(), "", nil)
	if err != nil {
		return nil, err
	}

	var events []WatchEvent

	dec := json.NewDecoder(bytes.NewReader(data))
	for dec.More() {
		var ev WatchEvent
		if err := dec.Decode(&ev); err != nil {
			return events, fmt.Errorf("decode watch event %d: %w", len(events), err)
		}

		events = append(events, ev)
	}

	return events, nil
}

// Watch is a watch stream read as it arrives (see Client.Watch).
type Watch struct {
	// Events delivers each event as it is decoded; it is closed when the
	// stream ends, after which Err says why.
	Events <-chan WatchEvent

	body   io.Closer
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Watch starts a watch of collectionPath from resourceVersion, ended by the
// server after timeoutSeconds, and returns once the server has answered
// its headers. Unlike WatchFor it streams: a test can see that a watch is
// still open, and when an event arrives on it. The watch uses a connection
// of its own. Close it when done.
func (c *Client) Watch(ctx context.Context, collectionPath, resourceVersion string, timeoutSeconds int) (*Watch, error) {
	q := url.Values{}
	q.Set("watch", "1")
	q.Set("resourceVersion", resourceVersion)
	q.Set("timeoutSeconds", strconv.Itoa(timeoutSeconds))

	ctx, cancel := context.WithCancel(ctx)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Server+collectionPath+"?"+q.Encode(), nil)
	if err != nil {
		cancel()

		return nil, fmt.Errorf("build watch request: %w", err)
	}

	req.Header.Set("Accept", "application/json")

	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}

	// Its own transport: the watch must not share, or be shared as, a
	// pooled connection, and must outlast the client's request timeout.
	tr := c.HTTP.Transport.(*http.Transport).Clone() //nolint:forcetypeassert // set by PKI.Client
	hc := &http.Client{Transport: tr, Timeout: time.Duration(timeoutSeconds)*time.Second + requestTimeout}

	resp, err := hc.Do(req)
	if err != nil {
		cancel()

		return nil, fmt.Errorf("watch %s: %w", collectionPath, err)
	}

	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		cancel()

		return nil, &StatusError{Method: http.MethodGet, Path: collectionPath, Code: resp.StatusCode, Body: string(bytes.TrimSpace(body))}
	}

	events := make(chan WatchEvent, 64)
	w := &Watch{Events: events, body: resp.Body, cancel: cancel, done: make(chan struct{})}

	go func() {
		defer close(w.done)
		defer close(events)

		dec := json.NewDecoder(resp.Body)

		for {
			var ev WatchEvent
			if err := dec.Decode(&ev); err != nil {
				w.err = err

				return
			}

			select {
			case events <- ev:
			case <-ctx.Done():
				w.err = ctx.Err()

				return
			}
		}
	}()

	return w, nil
}

// Err is why the stream ended (io.EOF: the server ended it cleanly);
// valid once Events is closed.
func (w *Watch) Err() error {
	<-w.done

	return w.err
}

// Close ends the watch.
func (w *Watch) Close() {
	w.cancel()
	w.body.Close()
	<-w.done
}

// Done is closed when the stream has ended.
func (w *Watch) Done() <-chan struct{} { return w.done }
