package upstream

import (
	"net/netip"
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"
)

// Node is one upstream. The engine dials DialAddr, counts its connections
// with Attach and Detach, and passes the Node back in Report; everything
// else about it is the Set's business.
type Node struct {
	addr string
	// dialAddr is where connections go: addr itself when it is an IP
	// address, else what the name last resolved to (SetDialAddr).
	dialAddr atomic.Pointer[netip.AddrPort]

	active     atomic.Int64
	total      atomic.Uint64
	dialErrors [LostRace]atomic.Uint64 // by DialErrorReasons
	bytesIn    atomic.Uint64           // client -> upstream
	bytesOut   atomic.Uint64           // upstream -> client
	usableNow  atomic.Bool             // usable(), for readers without the Set's lock

	// Guarded by the Set's mu.
	sources   []string
	healthy   bool // by the fall/rise rule
	unproven  bool // added while running: unused until its first check passes
	fails     int  // failed checks in a row
	passes    int  // passing checks in a row
	tier      int
	suspended bool // the data path saw it fail since the last passing check
	latency   time.Duration
	lastErr   error
	changed   time.Time
	drain     clock.Timer // set while draining: listed no more
	revived   bool        // listed again while draining, by the last Reconcile

	// The check schedule (see Due).
	due       time.Time     // when the next check is due
	checking  bool          // handed out by Due, not yet recorded
	lastCheck time.Time     // when the last check was recorded
	backoff   time.Duration // the current retry delay while failing
	reset     bool          // its clients were reset since it last passed

	lastPass     time.Time     // of its last passing check
	failedSince  time.Time     // first failed check since it last passed; zero if passing
	gap          time.Duration // least time from a check to one brought forward by evidence
	lastEvidence time.Time     // when evidence last brought a check forward
	byEvidence   bool          // its next check was brought forward by evidence
}

func newNode(addr string, now time.Time) *Node {
	n := &Node{addr: addr, unproven: true, changed: now, due: now}
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		n.dialAddr.Store(&ap)
	}

	return n
}

// prove makes a new node usable before its first check.
func (n *Node) prove() {
	n.unproven, n.healthy = false, true
	n.usableNow.Store(true)
}

// Addr is the upstream's address as configured: host:port.
func (n *Node) Addr() string { return n.addr }

// DialAddr is the address to connect to, or nil while a host name has not
// been resolved yet.
func (n *Node) DialAddr() *netip.AddrPort { return n.dialAddr.Load() }

// SetDialAddr records what a host-name upstream resolved to.
func (n *Node) SetDialAddr(ap netip.AddrPort) { n.dialAddr.Store(&ap) }

// Attach counts a client connection made to n.
func (n *Node) Attach() {
	n.active.Add(1)
	n.total.Add(1)
}

// Detach counts the end of a client connection to n and the bytes it
// moved each way.
func (n *Node) Detach(in, out uint64) {
	n.active.Add(-1)
	n.bytesIn.Add(in)
	n.bytesOut.Add(out)
}

// Active is the number of client connections to n.
func (n *Node) Active() int64 { return n.active.Load() }

// Usable reports whether n takes new connections, as last decided.
func (n *Node) Usable() bool { return n.usableNow.Load() }

// usable reports whether new connections may go to n; the Set's lock is
// held.
func (n *Node) usable() bool { return n.healthy && !n.suspended }

// score is the current streak: passing checks in a row, or minus the
// failed ones.
func (n *Node) score() float64 {
	if n.fails > 0 {
		return float64(-n.fails)
	}

	return float64(n.passes)
}
