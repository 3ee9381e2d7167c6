package kubeharness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
