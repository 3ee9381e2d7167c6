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
// never each other (TestLayers).
//
// # State of an upstream
//
//	  added while running                     listed at start
//	        |                                       |
//	        v      first check passes               v
//	   unproven --------------------------------> up <-------------------.
//	        | first check fails                  |  ^                    |
//	        |                 strong evidence    |  | passing check      |
//	        |          (refused, timed-out dial, v  |                    |
//	        |           hang-up before any byte) suspended               |
//	        |                                    |                       |
//	        |        Fall failed checks in a row | (from up or suspended)|
//	        '------------------------------> down ---- Rise passing -----'
//	                                               checks in a row
//
//	weak evidence (hang-up after the client's bytes, no answer within the
//	answer timeout) changes no state: it only brings the next check forward.
//
//	fail-open (the set): no upstream is up; Pick then returns suspended and
//	down upstreams too, and the dial decides. No clients are reset.
//
//	draining: Reconcile without it; its connections go on for DrainTimeout,
//	then the engine is told to close them. Listed again before that: the
//	same node is revived, connections and state kept.
//
// docs/engine.md has the rules in full.
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
