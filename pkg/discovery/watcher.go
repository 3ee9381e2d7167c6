package discovery

import (
	"context"
	"errors"
	"io"
	"maps"
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

	mu      sync.Mutex
	state   State
	errorRV string // LastSyncResourceVersion when the last error happened
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

	_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		w.watchError(err, inf.LastSyncResourceVersion())
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

	go w.noticeRecovery(ctx, inf)

	inf.RunWithContext(ctx)
}

// listWatch sees only the one slice, so a Role limited to it by
// resourceNames is enough.
func (w *Watcher) listWatch() *cache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", SliceName).String()
	request := func(o metav1.ListOptions) *rest.Request {
		return w.client.Get().Namespace(Namespace).Resource("endpointslices").VersionedParams(&o, metav1.ParameterCodec)
	}

	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel

			w.mu.Lock()
			w.state.Lists++
			w.mu.Unlock()

			list := &discoveryv1.EndpointSliceList{}

			return list, request(o).Do(ctx).Into(list)
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

			return request(o).Watch(ctx)
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

// watchError classifies a failed list or watch. Routine ends of a watch are
// not news; a new kind of trouble is logged once, not on every retry.
func (w *Watcher) watchError(err error, rv string) {
	var phase Phase

	switch {
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.Canceled):
		w.log.Debug("watch ended; client-go resumes it", zap.Error(err))

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
	w.errorRV = rv
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

// noticeRecovery marks the watch healthy again once client-go has relisted
// after an error: the resource version moves even when the slice did not
// change, so no event would tell us.
func (w *Watcher) noticeRecovery(ctx context.Context, inf cache.SharedIndexInformer) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()

	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}

		rv := inf.LastSyncResourceVersion()

		w.mu.Lock()
		if rv != "" && (w.state.Phase == Connecting || (w.state.Phase != Watching && rv != w.errorRV)) {
			w.synced()
		}
		w.mu.Unlock()
	}
}
