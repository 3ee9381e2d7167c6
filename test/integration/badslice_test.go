//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// A slice the API server stores but that cannot be used (its https port
// renamed, every endpoint not ready) and a deleted slice never replace the
// good set: each is seen, logged and ignored. Written with the admin
// credentials, as a misbehaving controller or a person would.
func TestBadOrDeletedSliceNeverReplacesTheSet(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = c.kubeconfig(t) })

	eventually(t, 30*time.Second, "all three discovered", func() bool { return slices.Equal(r.addresses(), all) })

	changes := r.logs.FilterMessage("discovered API servers").Len()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)

	for i, edit := range []struct {
		what, why string // the change, and the watcher's reason to ignore it
		change    func(slice map[string]any)
	}{
		{"its https port renamed", `no port named "https"`, func(s map[string]any) {
			for _, p := range s["ports"].([]any) {
				p.(map[string]any)["name"] = "not-https"
			}
		}},
		{"every endpoint not ready", "no ready endpoint", func(s map[string]any) {
			for _, p := range s["ports"].([]any) {
				p.(map[string]any)["name"] = "https"
			}

			for _, e := range s["endpoints"].([]any) {
				e.(map[string]any)["conditions"] = map[string]any{"ready": false}
			}
		}},
	} {
		var slice map[string]any
		if err := c.admin.GetJSON(ctx, kubeharness.KubernetesSlicePath, &slice); err != nil {
			t.Fatal(err)
		}

		edit.change(slice)

		body, err := json.Marshal(slice)
		if err != nil {
			t.Fatal(err)
		}

		if _, err := c.admin.Do(ctx, http.MethodPut, kubeharness.KubernetesSlicePath, "application/json", body); err != nil {
			t.Fatalf("storing a slice with %s: %v", edit.what, err)
		}

		eventually(t, 10*time.Second, "the slice with "+edit.what+" seen and ignored", func() bool {
			return r.logs.FilterMessageSnippet("ignoring the kubernetes EndpointSlice").Len() >= i+1
		})

		ignored := r.logs.FilterMessageSnippet("ignoring the kubernetes EndpointSlice").All()[i]
		if why := ignored.ContextMap()["error"]; !strings.Contains(fmt.Sprint(why), edit.why) {
			t.Fatalf("the slice with %s was ignored for %q, want %q", edit.what, why, edit.why)
		}

		if got := r.addresses(); !slices.Equal(got, all) {
			t.Fatalf("after a slice with %s, upstreams %v, want %v", edit.what, got, all)
		}
	}

	events := r.metric(t, "extractedprism_discovery_events_total") // a deletion is not counted

	if _, err := c.admin.Do(ctx, http.MethodDelete, kubeharness.KubernetesSlicePath, "", nil); err != nil {
		t.Fatalf("deleting the slice: %v", err)
	}

	eventually(t, 10*time.Second, "the deletion seen and ignored", func() bool {
		return logged(r.logs, "the kubernetes EndpointSlice was deleted; keeping the last known set")
	})

	if got := r.addresses(); !slices.Equal(got, all) {
		t.Fatalf("after the slice was deleted, upstreams %v, want %v", got, all)
	}

	// The API servers write their slice again (lease reconciler, every
	// 10 s): the same set, so no change either.
	if _, err := c.admin.WaitForKubernetesSlice(ctx, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3); err != nil {
		t.Fatalf("the API servers did not write their slice again: %v", err)
	}

	eventually(t, 10*time.Second, "the rewritten slice seen", func() bool {
		return r.metric(t, "extractedprism_discovery_events_total") > events
	})

	if n := r.logs.FilterMessage("discovered API servers").Len(); n != changes {
		t.Fatalf("%d changes of the discovered set after bad and deleted slices, want none", n-changes)
	}

	if got := r.addresses(); !slices.Equal(got, all) {
		t.Fatalf("upstreams %v at the end, want %v", got, all)
	}
}
