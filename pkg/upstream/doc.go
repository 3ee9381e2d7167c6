// Package upstream is extractedprism's upstream model: the set of API
// servers the proxy may send clients to, what is known of each one's
// health, and which one the next connection goes to.
//
// It is pure logic with an injected clock. It knows no sockets, no epoll,
// no configuration file and no discovery: checks (package check) record
// their results here, the relay engine (package balancer) asks for an
// upstream and reports what its connections learned, and the daemon
// reconciles the set from configuration and discovery.
//
// Where it sits:
//
//	cmd/extractedprism
//	      |
//	   daemon ---------------------------------------------.
//	      |            |             |            |         |
//	  balancer       check      health, status, metrics, doctor
//	  (moves bytes)  (runs checks)
//	      \            /
//	       v          v
//	  upstream (decides)      config      discovery      (ground floor)
//
// A package imports only what is below it. upstream, config and discovery
// import nothing of the project; balancer and check import upstream and
// never each other; only daemon imports balancer.
//
// # State of an upstream
//
//	         Record(pass) x Rise
//	  down <--------------------- up
//	   |  ---------------------->  ^ |
//	   |    Record(fail) x Fall    | | Report(dial failed, ended before
//	   |                           | v         answering)
//	   |                        suspended: used only as a last resort,
//	   |                        until the next passing check
//	   |
//	Reconcile without it: draining (listed no more; its connections
//	go on for DrainTimeout, then the engine is told to close them).
//	Reconcile with it again while draining: revived, connections kept.
//
// # Rules the engine relies on
//
//   - The closer (SetCloser) is never called with the Set's lock held, and
//     never from Pick or Report: the engine calls those holding a loop's
//     lock, and the closer takes every loop's lock.
//   - Pick never returns an upstream that fails its checks; an empty set is
//     refused by Reconcile, so the set is never empty.
//   - Node counters (Attach, Detach) are atomics the engine updates
//     without the Set's lock; everything else of a Node is guarded by the
//     Set's lock.
package upstream
