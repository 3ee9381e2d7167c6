package discovery

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// Phase is where the watch stands, for logs, /status and systemd's STATUS.
type Phase string

// Phases of the watch.
const (
	Connecting   Phase = "connecting"   // no successful list yet
	Watching     Phase = "watching"     // in sync with the API
	Unreachable  Phase = "unreachable"  // retrying with backoff
	Forbidden    Phase = "forbidden"    // RBAC denies get/list/watch
	Unauthorized Phase = "unauthorized" // the credentials are rejected
)

// State is a snapshot of the watcher.
type State struct {
	Phase     Phase
	Endpoints []string // the last good set; nil before the first
	LastSync  time.Time
	LastError string
	// Lists counts full fetches of the state (a list, or a watch that
	// streams the initial state): the first, and each one after a watch
	// could not resume (410 Gone).
	Lists uint64
	// Events counts slice events (added or updated), Errors failed lists
	// and watches by the phase they led to.
	Events uint64
	Errors map[Phase]uint64
}

// Watcher follows the `kubernetes` EndpointSlice with client-go's informer
// machinery (list+watch, bookmarks, relist on 410 Gone, capped backoff) and
// reports the upstream set each time it changes.
type Watcher struct {
	client   rest.Interface // discovery.k8s.io/v1
	log      *zap.Logger
	limits   Limits
	onChange func([]string)

	mu    sync.Mutex
	state State
}

// NewWatcher returns a watcher that calls onChange with every new set,
// taken from the slice within limits.
func NewWatcher(client *Client, log *zap.Logger, limits Limits, onChange func([]string)) *Watcher {
	return &Watcher{
		client: client.Discovery, log: log, limits: limits, onChange: onChange,
		state: State{Phase: Connecting, Errors: map[Phase]uint64{}},
	}
}

// State returns the watcher's current state.
func (w *Watcher) State() State {
	w.mu.Lock()
	defer w.mu.Unlock()

	s := w.state
	s.Endpoints = slices.Clone(s.Endpoints)
	s.Errors = maps.Clone(s.Errors)

	return s
}

// Run watches until ctx ends. It never gives up: with the API unreachable,
// as at boot, it keeps retrying with client-go's capped backoff.
func (w *Watcher) Run(ctx context.Context) {
	inf := cache.NewSharedIndexInformerWithOptions(w.listWatch(), &discoveryv1.EndpointSlice{}, cache.SharedIndexInformerOptions{})

	// Requests are judged where they are made (listWatch): client-go
	// retries a refused connection or a 429 without calling this handler,
	// and what it does report here was judged there already.
	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.log.Debug("list and watch ended; client-go retries", zap.Error(err))
	})

	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.onSlice,
		UpdateFunc: func(_, obj any) { w.onSlice(obj) },
		DeleteFunc: func(any) {
			// The API server recreates its slice within seconds; a deletion
			// says nothing about which API servers are alive.
			w.log.Warn("the kubernetes EndpointSlice was deleted; keeping the last known set")
		},
	})

	inf.RunWithContext(ctx)
}

// watchLasts is the least a discovery watch lasts before client-go renews
// it; each lasts between it and twice it, so that a fleet started together
// does not renew together. client-go's own 5–10 min would have every node
// renew its watch 6 to 12 times an hour: a new request each time
// (authentication, authorization, a new watcher in the API server's watch
// cache) for an object that changes when API servers come and go. The
// bookmarks the API server sends meanwhile (about one a minute) keep the
// resource version fresh, so a renewal resumes and never lists. What a
// renewal costs the API server: docs/fleet.md.
const watchLasts = 30 * time.Minute

func watchLasting() time.Duration { return watchLasts + rand.N(watchLasts) }

// listWatch sees only the one slice, so a Role limited to it by
// resourceNames is enough.
func (w *Watcher) listWatch() *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", SliceName).String()
	// No retries inside a request: the informer retries with its capped
	// backoff. client-go would otherwise repeat a request that got no
	// answer ten times, a second apart, hiding an outage for 10 s a request
	// and asking the proxy once a second meanwhile.
	request := func(o metav1.ListOptions) *rest.Request {
		return w.client.Get().Namespace(Namespace).Resource("endpointslices").VersionedParams(&o, metav1.ParameterCodec).MaxRetries(0)
	}

	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel

			w.mu.Lock()
			w.state.Lists++
			w.mu.Unlock()

			list := &discoveryv1.EndpointSliceList{}
			err := request(o).Do(ctx).Into(list)
			w.answered(err)

			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel

			if o.SendInitialEvents != nil && *o.SendInitialEvents {
				// A streaming list: client-go's way of listing when the
				// API server supports it.
				w.mu.Lock()
				w.state.Lists++
				w.mu.Unlock()
			}

			o.Watch = true
			o.TimeoutSeconds = ptr.To(int64(watchLasting().Seconds()))

			wi, err := request(o).Watch(ctx)
			if err != nil {
				w.requestFailed(err)

				return nil, err
			}

			// A watch that got no answer comes back as an empty watch
			// without an error: only what it streams is contact.
			return watch.Filter(wi, w.streamed), nil
		},
	}
}

func (w *Watcher) onSlice(obj any) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return
	}

	eps, dropped, err := w.limits.FromSlice(s)
	if err == nil && len(eps) == 0 {
		err = errors.New("no ready endpoint")
	}

	if len(dropped) > 0 {
		w.log.Warn("the kubernetes EndpointSlice lists addresses that cannot be API servers; dropped them",
			zap.String("resource_version", s.ResourceVersion), zap.Int("dropped", len(dropped)),
			zap.Errors("first", dropped[:min(len(dropped), maxLoggedDrops)]))
	}

	w.mu.Lock()
	w.state.Events++
	w.synced()

	if err != nil {
		w.mu.Unlock()
		w.log.Warn("ignoring the kubernetes EndpointSlice; keeping the last known set",
			zap.String("resource_version", s.ResourceVersion), zap.Error(err))

		return
	}

	changed := !slices.Equal(eps, w.state.Endpoints)
	w.state.Endpoints = eps
	w.mu.Unlock()

	if changed {
		w.onChange(slices.Clone(eps))
	}
}

// maxLoggedDrops bounds the dropped addresses named in one log line.
const maxLoggedDrops = 3

// synced records contact with the API; w.mu is held.
func (w *Watcher) synced() {
	w.state.LastSync = time.Now()

	if w.state.Phase != Watching {
		w.log.Info("discovery watching the kubernetes EndpointSlice", zap.String("was", string(w.state.Phase)))
		w.state.Phase = Watching
		w.state.LastError = ""
	}
}

// streamed records an event of a watch stream as contact with the API. An
// error event is not judged here: client-go makes its own when the stream
// breaks or is stopped, and answers a real one with a new request, which
// is judged.
func (w *Watcher) streamed(ev watch.Event) (watch.Event, bool) {
	if ev.Type != watch.Error {
		w.answered(nil)
	}

	return ev, true
}

// answered records how a request to the API went. Any answer means the API
// is reachable (and, after trouble, that the watch recovers: a relist may
// bring no slice event); a failure is classified.
func (w *Watcher) answered(err error) {
	if err != nil {
		w.requestFailed(err)

		return
	}

	w.mu.Lock()
	w.synced()
	w.mu.Unlock()
}

// requestFailed classifies a failed list or watch request. A resource
// version the API server no longer has is routine: client-go lists again.
// A request that got no answer at all (EOF: through the proxy, no API
// server is left behind it) is an unreachable API, not the normal end of
// a watch stream, which never fails a request. A new kind of trouble is
// logged once, not on every retry.
func (w *Watcher) requestFailed(err error) {
	var phase Phase

	switch {
	case errors.Is(err, context.Canceled): // stopping
		return
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
		w.log.Debug("the watch cannot resume; client-go lists again", zap.Error(err))

		return
	case apierrors.IsForbidden(err):
		phase = Forbidden
	case apierrors.IsUnauthorized(err):
		phase = Unauthorized
	default:
		phase = Unreachable
	}

	w.mu.Lock()
	was := w.state.Phase
	w.state.Phase = phase
	w.state.Errors[phase]++
	w.state.LastError = err.Error()
	w.mu.Unlock()

	if was == phase {
		w.log.Debug("discovery still failing", zap.String("phase", string(phase)), zap.Error(err))

		return
	}

	switch phase {
	case Forbidden:
		w.log.Error("discovery forbidden: these credentials may not get/list/watch the EndpointSlice default/kubernetes; "+
			"apply the Role and RoleBinding from packaging/kubernetes/rbac.yaml. Retrying slowly; static endpoints stay in use.", zap.Error(err))
	case Unauthorized:
		w.log.Error("discovery unauthorized: the API rejects these credentials. Retrying; static endpoints stay in use.", zap.Error(err))
	default:
		w.log.Warn("discovery cannot reach the API; retrying with backoff", zap.Error(err))
	}
}
