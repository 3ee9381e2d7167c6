//go:build integration

package fleet

import (
	"context"
	"fmt"
	"net"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// watchSession is what the daemon's discovery does, without the daemon:
// a client-go informer on the one slice, authenticated with the node's
// client certificate, over the node's own connection.
type watchSession struct{ cancel context.CancelFunc }

const watchSyncTimeout = 30 * time.Second

func openWatch(ctx context.Context, e *env, node int) (session, error) {
	return openWatchFor(ctx, e, node, 0)
}

// renewEvery is how long the renewing watches of the watch-renew row last:
// that row less the watch row, over the renewals, is what one renewal
// costs.
const renewEvery = 10 * time.Second

func openRenewingWatch(ctx context.Context, e *env, node int) (session, error) {
	return openWatchFor(ctx, e, node, renewEvery)
}

// openWatchFor opens the watch; with lasting it asks each watch to end
// after that long, so that client-go renews it.
func openWatchFor(ctx context.Context, e *env, node int, lasting time.Duration) (session, error) {
	cfg := &rest.Config{
		Host:    "https://" + e.apiAddr(),
		APIPath: "/apis",
		TLSClientConfig: rest.TLSClientConfig{
			CAData:     e.pki.CAPEM,
			ServerName: serverName,
			CertFile:   e.cert(node).CertFile,
			KeyFile:    e.cert(node).KeyFile,
		},
		UserAgent: "fleet-bench-watch",
		// A dialer of its own keeps client-go from sharing one cached
		// transport, hence one HTTP/2 connection, between the nodes.
		Dial: (&net.Dialer{}).DialContext,
	}

	s := runtime.NewScheme()
	if err := discoveryv1.AddToScheme(s); err != nil {
		return nil, err
	}

	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	cfg.GroupVersion = &discoveryv1.SchemeGroupVersion
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()

	client, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, err
	}

	sel := fields.OneTermEqualSelector("metadata.name", "kubernetes").String()
	req := func(o metav1.ListOptions) *rest.Request {
		o.FieldSelector = sel

		return client.Get().Namespace("default").Resource("endpointslices").VersionedParams(&o, metav1.ParameterCodec)
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			list := &discoveryv1.EndpointSliceList{}

			return list, req(o).Do(ctx).Into(list)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.Watch = true
			if lasting > 0 {
				o.TimeoutSeconds = ptr.To(int64(lasting.Seconds()))
			}

			return req(o).Watch(ctx)
		},
	}

	inf := cache.NewSharedIndexInformerWithOptions(lw, &discoveryv1.EndpointSlice{}, cache.SharedIndexInformerOptions{})
	runCtx, cancel := context.WithCancel(context.Background())

	go inf.RunWithContext(runCtx)

	syncCtx, syncCancel := context.WithTimeout(ctx, watchSyncTimeout)
	defer syncCancel()

	if !cache.WaitForCacheSync(syncCtx.Done(), inf.HasSynced) {
		cancel()

		return nil, fmt.Errorf("watch for node %d: not synced within %v", node, watchSyncTimeout)
	}

	return &watchSession{cancel: cancel}, nil
}

func (w *watchSession) check(context.Context) (bool, error) { return true, nil }
func (w *watchSession) close()                              { w.cancel() }
