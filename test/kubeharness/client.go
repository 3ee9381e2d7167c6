package kubeharness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

const requestTimeout = 10 * time.Second

// Client is a minimal HTTPS client for the Kubernetes API using a bearer
// token; enough for tests to read slices and create RBAC objects without
// client-go.
type Client struct {
	Server string
	Token  string
	HTTP   *http.Client
}

// AdminClient returns a Client for server authenticating as Admin.
func (p *PKI) AdminClient(server string) *Client {
	return p.Client(server, p.Admin, "")
}

// Client returns a Client for server authenticating as u, verifying the
// serving certificate against the CA and tlsServerName (the host of server
// when empty).
func (p *PKI) Client(server string, u TokenUser, tlsServerName string) *Client {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)

	return &Client{
		Server: strings.TrimRight(server, "/"),
		Token:  u.Token,
		HTTP: &http.Client{
			Timeout: requestTimeout,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{
				MinVersion: tls.VersionTLS12,
				RootCAs:    roots,
				ServerName: tlsServerName,
			}},
		},
	}
}

// StatusError is a non-2xx answer from the apiserver.
type StatusError struct {
	Method, Path string
	Code         int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Code, e.Body)
}

// IsStatus reports whether err is a StatusError with the given HTTP code,
// e.g. IsStatus(err, http.StatusNotFound).
func IsStatus(err error, code int) bool {
	var se *StatusError

	return errors.As(err, &se) && se.Code == code
}

// Do sends a request to path (e.g. "/api/v1/namespaces") and returns the
// body of a 2xx answer; anything else is a *StatusError.
func (c *Client) Do(ctx context.Context, method, path, contentType string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.Server+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}

	req.Header.Set("Accept", "application/json")

	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}

	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}

	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()

	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, path, err)
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &StatusError{Method: method, Path: path, Code: resp.StatusCode, Body: string(bytes.TrimSpace(data))}
	}

	return data, nil
}

// GetJSON GETs path and decodes the JSON answer into out.
func (c *Client) GetJSON(ctx context.Context, path string, out any) error {
	data, err := c.Do(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}

	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}

	return nil
}

// KubernetesSlicePath is where the apiservers publish their own addresses.
const KubernetesSlicePath = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"

// EndpointSlice is the part of discovery.k8s.io/v1 EndpointSlice the tests
// look at.
type EndpointSlice struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		ResourceVersion string            `json:"resourceVersion"`
		Labels          map[string]string `json:"labels"`
	} `json:"metadata"`
	AddressType string `json:"addressType"`
	Endpoints   []struct {
		Addresses  []string `json:"addresses"`
		Conditions struct {
			Ready *bool `json:"ready"`
		} `json:"conditions"`
	} `json:"endpoints"`
	Ports []struct {
		Name     *string `json:"name"`
		Port     *int32  `json:"port"`
		Protocol *string `json:"protocol"`
	} `json:"ports"`
}

// KubernetesEndpointSlice reads default/kubernetes. A missing slice is a
// *StatusError with code 404.
func (c *Client) KubernetesEndpointSlice(ctx context.Context) (*EndpointSlice, error) {
	var s EndpointSlice
	if err := c.GetJSON(ctx, KubernetesSlicePath, &s); err != nil {
		return nil, err
	}

	return &s, nil
}

// Addresses returns every endpoint address in the slice, sorted.
func (s *EndpointSlice) Addresses() []string {
	var out []string
	for _, ep := range s.Endpoints {
		out = append(out, ep.Addresses...)
	}

	slices.Sort(out)

	return out
}

// Port returns the port with the given name.
func (s *EndpointSlice) Port(name string) (int32, bool) {
	for _, p := range s.Ports {
		if p.Name != nil && *p.Name == name && p.Port != nil {
			return *p.Port, true
		}
	}

	return 0, false
}

// WaitForKubernetesSlice polls default/kubernetes until its addresses are
// exactly want (in any order) and returns it. Errors reading the slice,
// including 404 before the first apiserver published it, are retried until
// ctx ends.
func (c *Client) WaitForKubernetesSlice(ctx context.Context, want ...string) (*EndpointSlice, error) {
	want = slices.Sorted(slices.Values(want))

	var last *EndpointSlice

	err := Poll(ctx, 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		s, err := c.KubernetesEndpointSlice(ctx)
		if err != nil {
			return false, err.Error(), nil
		}

		last = s
		got := s.Addresses()

		return slices.Equal(got, want), fmt.Sprintf("addresses %v, want %v", got, want), nil
	})
	if err != nil {
		return nil, fmt.Errorf("wait for kubernetes EndpointSlice: %w", err)
	}

	return last, nil
}
