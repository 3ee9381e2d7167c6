// Package kubeharness runs real kube-apiserver and etcd processes for
// integration tests.
//
// The binaries come from hack/kube-bins/build.sh (see its README); tests find
// them through the KUBE_BINS environment variable:
//
//	export KUBE_BINS=$(hack/kube-bins/build.sh | tail -1)
//
// kube-apiserver refuses to publish loopback addresses in the "kubernetes"
// EndpointSlice, so multi-apiserver tests bind each apiserver to its own
// TEST-NET-2 address on the loopback interface of a private network namespace.
// Build the test binary first (the namespace has no network), then run it
// through hack/netns-run.sh:
//
//	go test -c -tags integration -o /tmp/kh.test ./test/kubeharness
//	KUBE_BINS=... hack/netns-run.sh /tmp/kh.test -test.v
//
// A typical test:
//
//	kubeharness.RequireNetns(t, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
//	pki := kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(kubeharness.IPv4Addr1, kubeharness.IPv4Addr2))
//	etcd := kubeharness.StartEtcd(t, t.TempDir())
//	servers := kubeharness.StartAPIServers(t, etcd, kubeharness.APIServerOptions{PKI: pki},
//		kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
//	admin := pki.AdminClient(servers[0].URL())
//	slice, err := admin.WaitForKubernetesSlice(ctx, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
//
// pki.Node is an unprivileged token user for least-privilege checks
// (Client.Create posts the Role and RoleBinding), pki.UserKubeconfig writes a
// kubeconfig for it, and Etcd.Compact forces re-lists (see
// APIServerOptions.NoEndpointSliceWatchCache).
//
// Everything is cleaned up through t.Cleanup: apiservers are stopped before
// etcd, because an apiserver terminating without etcd hangs for tens of
// seconds. Process logs are kept under t.TempDir() and their tails are printed
// when the test fails.
//
// The package deliberately uses only the standard library, so it adds no
// requirements to the project's go.mod.
package kubeharness
