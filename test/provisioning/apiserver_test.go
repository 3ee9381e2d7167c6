//go:build provisioning

package provisioning

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// object is one document of a manifest: its text, sent to the API server
// as it is, and what the test needs to address it.
type object struct {
	source                            string
	text                              string
	apiVersion, kind, namespace, name string
}

func (o object) String() string {
	return fmt.Sprintf("%s/%s/%s", o.source, o.kind, o.name)
}

func objects(t *testing.T, source, text string) []object {
	t.Helper()

	var out []object

	for i, doc := range splitDocs(text) {
		var m map[string]any
		if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
			t.Fatalf("%s: document %d: %v", source, i, err)
		}

		if m == nil {
			continue
		}

		o := object{source: source, text: doc}
		o.apiVersion, _ = m["apiVersion"].(string)
		o.kind, _ = m["kind"].(string)
		o.namespace, _ = mustGet(t, m, "metadata").(map[string]any)["namespace"].(string)
		o.name, _ = mustGet(t, m, "metadata", "name").(string)
		out = append(out, o)
	}

	return out
}

// resources finds an object's resource name and scope through API
// discovery, so nothing is guessed from the kind.
type resources struct {
	client *kubeharness.Client
	cache  map[string][]apiResource
}

type apiResource struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	Namespaced bool   `json:"namespaced"`
}

func (r *resources) path(ctx context.Context, o object) (string, error) {
	if _, ok := r.cache[o.apiVersion]; !ok {
		base := "/apis/" + o.apiVersion
		if o.apiVersion == "v1" {
			base = "/api/v1"
		}

		var list struct {
			Resources []apiResource `json:"resources"`
		}
		if err := r.client.GetJSON(ctx, base, &list); err != nil {
			return "", fmt.Errorf("discovery of %s: %w", o.apiVersion, err)
		}

		r.cache[o.apiVersion] = list.Resources
	}

	base := "/apis/" + o.apiVersion
	if o.apiVersion == "v1" {
		base = "/api/v1"
	}

	for _, res := range r.cache[o.apiVersion] {
		if res.Kind != o.kind || strings.Contains(res.Name, "/") {
			continue
		}

		if !res.Namespaced {
			return fmt.Sprintf("%s/%s/%s", base, res.Name, o.name), nil
		}

		if o.namespace == "" {
			return "", fmt.Errorf("%s is namespaced, but the manifest names no namespace", o)
		}

		return fmt.Sprintf("%s/namespaces/%s/%s/%s", base, o.namespace, res.Name, o.name), nil
	}

	return "", fmt.Errorf("the API server serves no %s in %s", o.kind, o.apiVersion)
}

// TestServerSideDryRun applies every shipped manifest and both chart
// renderings to a real kube-apiserver as a server-side apply with
// dryRun=All and strict field validation: schema, defaulting, validation
// and admission (service accounts, priority classes, ...) all run, and
// nothing is stored. Then it applies the chart's RBAC for real and asks
// the API server what the DaemonSet's service account may do.
func TestServerSideDryRun(t *testing.T) {
	kubeharness.RequireNetns(t, kubeharness.IPv4Addr1)

	pki := kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(kubeharness.IPv4Addr1))
	etcd := kubeharness.StartEtcd(t, "")
	server := kubeharness.StartAPIServer(t, etcd, kubeharness.IPv4Addr1, kubeharness.APIServerOptions{PKI: pki})
	admin := pki.AdminClient(server.URL())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// There is no kube-controller-manager: create the ServiceAccount it
	// would, without which the ServiceAccount admission plugin rejects any
	// pod in kube-system (the static pod's mirror pod is exempt; a plain
	// pod is the stricter check).
	err := kubeharness.Poll(ctx, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		err := admin.Create(ctx, []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: default\n  namespace: kube-system\n"))
		if err == nil || kubeharness.IsStatus(err, http.StatusConflict) {
			return true, "", nil
		}

		return false, err.Error(), nil // kube-system may not exist yet
	})
	if err != nil {
		t.Fatalf("default service account in kube-system: %v", err)
	}

	var all []object

	for _, f := range []string{
		"packaging/kubernetes/rbac.yaml",
		"packaging/kubernetes/rbac-host.yaml",
		"packaging/kubernetes/daemonset.yaml",
	} {
		all = append(all, objects(t, strings.TrimPrefix(f, "packaging/kubernetes/"), repoFile(t, f))...)
	}

	for name, text := range variants(t, "packaging/kubernetes/static-pod.yaml") {
		all = append(all, objects(t, name, text)...)
	}

	for name, text := range renderedChart(t) {
		all = append(all, objects(t, "chart-"+name, text)...)
	}

	res := &resources{client: admin, cache: map[string][]apiResource{}}
	paths := map[string]string{}

	for _, o := range all {
		t.Run("dry-run/"+o.String(), func(t *testing.T) {
			path, err := res.path(ctx, o)
			if err != nil {
				t.Fatal(err)
			}

			paths[o.String()] = path

			q := url.Values{"dryRun": {"All"}, "fieldManager": {"provisioning-test"}, "fieldValidation": {"Strict"}}

			body, err := admin.Do(ctx, http.MethodPatch, path+"?"+q.Encode(), "application/apply-patch+yaml", []byte(o.text))
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}

			var got struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(body, &got); err != nil || got.Kind != o.kind || got.Metadata.Name != o.name {
				t.Fatalf("unexpected answer (%v): %.300s", err, body)
			}
		})
	}

	// Controls: the same request must fail, for the right reason, for a
	// manifest with an unknown field, an invalid value or a pod whose
	// service account does not exist, or the checks above prove nothing.
	for name, control := range map[string]struct {
		mutate func(string) string
		reason string // in the API server's answer
	}{
		"unknown field": {func(s string) string {
			return strings.Replace(s, "hostNetwork: true", "hostNetwrk: true", 1)
		}, "hostNetwrk"},
		"invalid value": {func(s string) string {
			return strings.Replace(s, "dnsPolicy: ClusterFirstWithHostNet", "dnsPolicy: Sometimes", 1)
		}, "dnsPolicy"},
		"missing service account": {func(s string) string {
			return strings.Replace(s, "serviceAccountName: extractedprism", "serviceAccountName: extractedprism-control", 1)
		}, "extractedprism-control"},
	} {
		t.Run("dry-run rejects/"+name, func(t *testing.T) {
			ds := objects(t, "daemonset.yaml", repoFile(t, "packaging/kubernetes/daemonset.yaml"))[0]
			text := control.mutate(ds.text)

			if text == ds.text {
				t.Fatal("the mutation changed nothing")
			}

			bad := objects(t, "mutated", text)[0]
			if name == "missing service account" {
				// The DaemonSet's pod template as a pod of its own, naming
				// a service account that does not exist.
				var m map[string]any
				if err := yaml.Unmarshal([]byte(text), &m); err != nil {
					t.Fatal(err)
				}

				pod := map[string]any{
					"apiVersion": "v1", "kind": "Pod",
					"metadata": map[string]any{"name": "extractedprism-control", "namespace": "kube-system"},
					"spec":     mustGet(t, m, "spec", "template", "spec"),
				}
				data, _ := json.Marshal(pod)
				bad = object{source: "control", text: string(data), apiVersion: "v1", kind: "Pod", namespace: "kube-system", name: "extractedprism-control"}
			}

			path, err := res.path(ctx, bad)
			if err != nil {
				t.Fatal(err)
			}

			q := url.Values{"dryRun": {"All"}, "fieldManager": {"provisioning-test"}, "fieldValidation": {"Strict"}}
			_, err = admin.Do(ctx, http.MethodPatch, path+"?"+q.Encode(), "application/apply-patch+yaml", []byte(bad.text))
			if err == nil {
				t.Fatal("accepted")
			}

			if !strings.Contains(err.Error(), control.reason) {
				t.Fatalf("rejected, but not for %q: %v", control.reason, err)
			}
		})
	}

	t.Run("dry-run stored nothing", func(t *testing.T) {
		for name, path := range paths {
			if _, err := admin.Do(ctx, http.MethodGet, path, "", nil); !kubeharness.IsStatus(err, http.StatusNotFound) {
				t.Errorf("%s: GET %s after the dry run: %v, want 404", name, path, err)
			}
		}
	})

	// For real now: the chart's RBAC and the host RBAC, then what their
	// subjects may do. Discovery needs get, list and watch of the one
	// EndpointSlice default/kubernetes (list and watch by field selector
	// metadata.name, which the authorizer sees as the name).
	for _, o := range all {
		if o.source != "chart-default.yaml" && o.source != "rbac-host.yaml" || o.kind == "DaemonSet" {
			continue
		}

		q := url.Values{"fieldManager": {"provisioning-test"}, "fieldValidation": {"Strict"}}
		if _, err := admin.Do(ctx, http.MethodPatch, paths[o.String()]+"?"+q.Encode(), "application/apply-patch+yaml", []byte(o.text)); err != nil {
			t.Fatalf("apply %s: %v", o, err)
		}
	}

	var chartSA string

	for _, o := range all {
		if o.source == "chart-default.yaml" && o.kind == "ServiceAccount" {
			chartSA = "system:serviceaccount:" + o.namespace + ":" + o.name
		}
	}

	subjects := map[string]struct {
		user   string
		groups []string
	}{
		"chart service account": {chartSA, []string{"system:serviceaccounts", "system:authenticated"}},
		"host group":            {"extractedprism:node-1", []string{"extractedprism:nodes", "system:authenticated"}},
	}

	for subject, s := range subjects {
		for _, c := range []struct {
			verb, namespace, resource, name string
			allowed                         bool
		}{
			{"get", "default", "endpointslices", "kubernetes", true},
			{"list", "default", "endpointslices", "kubernetes", true},
			{"watch", "default", "endpointslices", "kubernetes", true},
			{"list", "default", "endpointslices", "", false},
			{"get", "default", "endpointslices", "other", false},
			{"get", "kube-system", "endpointslices", "kubernetes", false},
			{"update", "default", "endpointslices", "kubernetes", false},
		} {
			name := fmt.Sprintf("rbac/%s/%s %s/%s %s", subject, c.verb, c.namespace, c.resource, c.name)

			t.Run(name, func(t *testing.T) {
				if s.user == "" {
					t.Fatal("the chart rendered no ServiceAccount")
				}

				sar := map[string]any{
					"apiVersion": "authorization.k8s.io/v1",
					"kind":       "SubjectAccessReview",
					"spec": map[string]any{
						"user":   s.user,
						"groups": s.groups,
						"resourceAttributes": map[string]any{
							"group": "discovery.k8s.io", "resource": c.resource, "verb": c.verb,
							"namespace": c.namespace, "name": c.name,
						},
					},
				}
				req, _ := json.Marshal(sar)

				allowed := func(ctx context.Context) (bool, error) {
					body, err := admin.Do(ctx, http.MethodPost, "/apis/authorization.k8s.io/v1/subjectaccessreviews", "application/json", req)
					if err != nil {
						return false, err
					}

					var got struct {
						Status struct {
							Allowed bool `json:"allowed"`
						} `json:"status"`
					}

					if err := json.Unmarshal(body, &got); err != nil {
						return false, err
					}

					return got.Status.Allowed, nil
				}

				if !c.allowed {
					// The allowed cases ran first and saw the new
					// bindings, so a denial now is not a stale cache.
					if ok, err := allowed(ctx); err != nil || ok {
						t.Fatalf("allowed=%v (%v), want a denial", ok, err)
					}

					return
				}

				// The RBAC authorizer sees new bindings through its
				// informers, a moment after they are stored.
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()

				err := kubeharness.Poll(pctx, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
					ok, err := allowed(ctx)

					return ok, "denied", err
				})
				if err != nil {
					t.Fatalf("want allowed: %v", err)
				}
			})
		}
	}
}
