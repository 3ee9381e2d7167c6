package discovery

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// fakeAPI serves the one resource the watcher reads, the EndpointSlice
// collection in default, over real HTTP on loopback: lists, watches
// (streaming initial events when asked, as client-go does by default) and
// errors as metav1.Status. The integration tests run the watcher against
// real kube-apiservers; this stands in where those cannot help: without
// root and a 10-minute build, and for what a real API server never sends,
// such as a slice its validation would reject or a chosen error code.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	rv       int
	slice    *discoveryv1.EndpointSlice // nil: none exists
	fail     int                        // answer every request with this status; 0: serve
	hangUp   bool                       // close every connection without an answer
	watchers []chan watch.Event
	lists    int           // full fetches served: lists and streaming lists
	lasting  []string      // each watch request's timeoutSeconds
	fetched  chan struct{} // a token per full fetch served
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()

	f := &fakeAPI{t: t, fetched: make(chan struct{}, 1000)}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.close)

	return f
}

func (f *fakeAPI) close() {
	f.mu.Lock()
	for _, w := range f.watchers {
		close(w)
	}

	f.watchers = nil
	f.mu.Unlock()

	f.srv.CloseClientConnections()
	f.srv.Close()
}

// client is a Client for the fake, built by the package's own NewClient.
func (f *fakeAPI) client(t *testing.T) *Client {
	t.Helper()

	c, err := NewClient(&rest.Config{Host: f.srv.URL})
	if err != nil {
		t.Fatal(err)
	}

	return c
}

// failWith makes every later request fail with code (0: serve again).
func (f *fakeAPI) failWith(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.fail = code
}

// hangUpOnAll makes the server close every new connection without an
// answer, and ends the open watches: what a client sees through the proxy
// when no API server is left behind it (the proxy accepts, finds no
// upstream, and closes).
func (f *fakeAPI) hangUpOnAll() {
	f.mu.Lock()
	f.hangUp = true
	for _, w := range f.watchers {
		close(w)
	}

	f.watchers = nil
	f.mu.Unlock()

	f.srv.CloseClientConnections()
}

// set stores s (nil deletes the slice) and sends the matching event to
// every open watch.
func (f *fakeAPI) set(s *discoveryv1.EndpointSlice) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.rv++

	var ev watch.Event

	switch {
	case s == nil && f.slice == nil:
		return
	case s == nil:
		gone := f.stamp(f.slice.DeepCopy())
		ev = watch.Event{Type: watch.Deleted, Object: gone}
	case f.slice == nil:
		ev = watch.Event{Type: watch.Added, Object: f.stamp(s.DeepCopy())}
	default:
		ev = watch.Event{Type: watch.Modified, Object: f.stamp(s.DeepCopy())}
	}

	if s == nil {
		f.slice = nil
	} else {
		f.slice = ev.Object.(*discoveryv1.EndpointSlice).DeepCopy()
	}

	for _, w := range f.watchers {
		w <- ev
	}
}

// endWatches sends every open watch an ERROR event with code (410 Gone
// makes client-go list again), as an API server does when it cannot
// resume a watch.
func (f *fakeAPI) endWatches(code int) {
	f.mu.Lock()
	defer f.mu.Unlock()

	st := &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Reason: metav1.StatusReasonExpired,
		Message: "too old resource version",
	}
	for _, w := range f.watchers {
		w <- watch.Event{Type: watch.Error, Object: st}
		close(w)
	}

	f.watchers = nil
}

// stamp gives s the name, namespace, type and current resource version of
// the API server's own slice; f.mu is held.
func (f *fakeAPI) stamp(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	s.TypeMeta = metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"}
	s.Name, s.Namespace = SliceName, Namespace
	s.ResourceVersion = strconv.Itoa(f.rv)

	return s
}

func (f *fakeAPI) listsServed() int {
	f.mu.Lock()
	defer f.mu.Unlock()

	return f.lists
}

const slicesPath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"

// waitFetch waits for the next full fetch (list or streaming list) served
// after the tokens already read.
func (f *fakeAPI) waitFetch(t *testing.T) {
	t.Helper()

	select {
	case <-f.fetched:
	case <-time.After(30 * time.Second):
		t.Fatal("the fake API server served no list within 30 s")
	}
}

// drainFetches forgets the fetches served so far.
func (f *fakeAPI) drainFetches() {
	for {
		select {
		case <-f.fetched:
		default:
			return
		}
	}
}

func (f *fakeAPI) fetchServed() {
	f.lists++

	select {
	case f.fetched <- struct{}{}:
	default: // a test that waits reads them long before this fills
	}
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	hangUp := f.hangUp
	f.mu.Unlock()

	if hangUp {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}

		return
	}

	if r.URL.Path != slicesPath || r.URL.Query().Get("fieldSelector") != "metadata.name="+SliceName {
		f.status(w, http.StatusNotFound)
		return
	}

	f.mu.Lock()
	code := f.fail
	f.mu.Unlock()

	if code != 0 {
		f.status(w, code)
		return
	}

	if r.URL.Query().Get("watch") == "true" {
		f.mu.Lock()
		f.lasting = append(f.lasting, r.URL.Query().Get("timeoutSeconds"))
		f.mu.Unlock()
		f.watch(w, r)

		return
	}

	f.mu.Lock()
	f.fetchServed()
	list := &discoveryv1.EndpointSliceList{
		TypeMeta: metav1.TypeMeta{Kind: "EndpointSliceList", APIVersion: "discovery.k8s.io/v1"},
		ListMeta: metav1.ListMeta{ResourceVersion: strconv.Itoa(f.rv)},
	}

	if f.slice != nil {
		list.Items = append(list.Items, *f.slice.DeepCopy())
	}
	f.mu.Unlock()

	f.json(w, http.StatusOK, list)
}

// watch streams events: first, when asked for initial events, the current
// slice and the bookmark that ends them; then every change until the client
// or the test goes away.
func (f *fakeAPI) watch(w http.ResponseWriter, r *http.Request) {
	events := make(chan watch.Event, 100)

	f.mu.Lock()
	if r.URL.Query().Get("sendInitialEvents") == "true" {
		f.fetchServed()

		if f.slice != nil {
			events <- watch.Event{Type: watch.Added, Object: f.slice.DeepCopy()}
		}

		events <- watch.Event{Type: watch.Bookmark, Object: &discoveryv1.EndpointSlice{
			TypeMeta: metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
			ObjectMeta: metav1.ObjectMeta{
				ResourceVersion: strconv.Itoa(f.rv),
				Annotations:     map[string]string{metav1.InitialEventsAnnotationKey: "true"},
			},
		}}
	}

	f.watchers = append(f.watchers, events)
	f.mu.Unlock()

	defer f.forget(events)

	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)

	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}

	enc := json.NewEncoder(w)

	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}

			if err := enc.Encode(metav1.WatchEvent{Type: string(ev.Type), Object: rawJSON(f.t, ev.Object)}); err != nil {
				return
			}

			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

func (f *fakeAPI) forget(events chan watch.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()

	for i, w := range f.watchers {
		if w == events {
			f.watchers = append(f.watchers[:i], f.watchers[i+1:]...)
			return
		}
	}
}

func (f *fakeAPI) status(w http.ResponseWriter, code int) {
	reasons := map[int]metav1.StatusReason{
		http.StatusUnauthorized: metav1.StatusReasonUnauthorized,
		http.StatusForbidden:    metav1.StatusReasonForbidden,
		http.StatusNotFound:     metav1.StatusReasonNotFound,
		http.StatusGone:         metav1.StatusReasonExpired,
	}

	f.json(w, code, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure,
		Code:     int32(code),
		Reason:   reasons[code],
		Message:  http.StatusText(code) + " (fake API server)",
	})
}

func (f *fakeAPI) json(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)

	if err := json.NewEncoder(w).Encode(v); err != nil {
		f.t.Logf("fake API server: writing a response: %v", err)
	}
}

func rawJSON(t *testing.T, v any) runtime.RawExtension {
	t.Helper()

	data, err := json.Marshal(v)
	if err != nil {
		t.Errorf("fake API server: encoding %T: %v", v, err)
	}

	return runtime.RawExtension{Raw: data}
}
