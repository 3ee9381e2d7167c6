package discovery

import (
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
)

// Client is what extractedprism asks the API: the kubernetes EndpointSlice,
// and access reviews for `doctor`. It knows only those types, so the binary
// does not carry (and page in at start) the typed clients of every API group.
type Client struct {
	Discovery     rest.Interface // discovery.k8s.io/v1
	Authorization rest.Interface // authorization.k8s.io/v1
}

func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{discoveryv1.AddToScheme, authorizationv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("building the API scheme: %w", err)
		}
	}

	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})

	return s, nil
}

// NewClient builds a Client for cfg.
func NewClient(cfg *rest.Config) (*Client, error) {
	s, err := newScheme()
	if err != nil {
		return nil, err
	}

	codecs := serializer.NewCodecFactory(s)

	mk := func(gv schema.GroupVersion) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion = &gv
		c.APIPath = "/apis"
		c.NegotiatedSerializer = codecs.WithoutConversion()

		if c.UserAgent == "" {
			c.UserAgent = rest.DefaultKubernetesUserAgent()
		}

		rc, err := rest.RESTClientFor(c)
		if err != nil {
			return nil, fmt.Errorf("API client for %s: %w", gv, err)
		}

		return rc, nil
	}

	d, err := mk(discoveryv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}

	a, err := mk(authorizationv1.SchemeGroupVersion)
	if err != nil {
		return nil, err
	}

	return &Client{Discovery: d, Authorization: a}, nil
}
