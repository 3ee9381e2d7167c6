// Package systemd speaks the service manager's protocols: listeners passed
// by socket activation, sd_notify state messages, and the watchdog.
// Outside systemd every function here is a harmless no-op.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
)

// Names of the inherited sockets, set by FileDescriptorName= in the units.
const (
	ProxySocket  = "proxy"
	HealthSocket = "health"
	// LinkLocalSocket is the proxy on the link-local address, for pods
	// without host networking (extractedprism-link-local.socket).
	LinkLocalSocket = "link-local"
)

// Inherited are the listeners passed by socket activation; nil for those
// not passed.
type Inherited struct {
	Proxy, LinkLocal, Health net.Listener
}

// ErrUnexpectedSockets means systemd passed sockets this daemon cannot use.
var ErrUnexpectedSockets = errors.New("unexpected inherited sockets")

// Listeners returns the listeners passed by socket activation, by name. A
// single unnamed socket is taken as the proxy's (systemd-socket-activate).
func Listeners() (Inherited, error) {
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return Inherited{}, fmt.Errorf("inherited sockets: %w", err)
	}

	if len(byName) == 1 {
		for name, lns := range byName {
			if name != HealthSocket && name != LinkLocalSocket && len(lns) == 1 && lns[0] != nil {
				return Inherited{Proxy: lns[0]}, nil
			}
		}
	}

	for name, lns := range byName {
		if (name != ProxySocket && name != HealthSocket && name != LinkLocalSocket) || len(lns) != 1 || lns[0] == nil {
			return Inherited{}, fmt.Errorf("%w: %d socket(s) named %q; want one stream socket named %q and optionally one named %q and one named %q",
				ErrUnexpectedSockets, len(lns), name, ProxySocket, LinkLocalSocket, HealthSocket)
		}
	}

	return Inherited{Proxy: first(byName[ProxySocket]), LinkLocal: first(byName[LinkLocalSocket]), Health: first(byName[HealthSocket])}, nil
}

func first(lns []net.Listener) net.Listener {
	if len(lns) == 0 {
		return nil
	}

	return lns[0]
}

// Notifier sends state to the service manager over NOTIFY_SOCKET.
type Notifier struct {
	log *zap.Logger
}

// NewNotifier returns a notifier; without NOTIFY_SOCKET it sends nothing.
func NewNotifier(log *zap.Logger) *Notifier { return &Notifier{log: log} }

// Notify sends one sd_notify message, such as "READY=1\nSTATUS=...".
func (n *Notifier) Notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", zap.Error(err))
	}
}

// Reloading tells systemd a reload has begun; READY=1 ends it. The
// timestamp lets systemd 253+ (Type=notify-reload) match the two.
func Reloading() string {
	return daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec()
}

// WatchdogInterval is the watchdog timeout systemd set for this process, or
// 0 when there is none.
func WatchdogInterval() (time.Duration, error) {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0, fmt.Errorf("watchdog settings: %w", err)
	}

	return d, nil
}

// Watchdog pings systemd at half the timeout while alive() reports the
// daemon's loops healthy. When alive() fails the pings stop, so that a
// wedged daemon is killed and restarted by systemd rather than lingering.
func Watchdog(ctx context.Context, n interface{ Notify(string) }, timeout time.Duration, alive func() error, log *zap.Logger) {
	if timeout <= 0 {
		return
	}

	tick := time.NewTicker(timeout / 2)
	defer tick.Stop()

	healthy := true

	for {
		err := alive()

		switch {
		case err == nil:
			if !healthy {
				log.Info("daemon loops healthy again; watchdog pings resumed")
			}

			n.Notify(daemon.SdNotifyWatchdog)
		case healthy:
			log.Error("daemon loop stalled; withholding watchdog pings so systemd restarts us", zap.Error(err))
		}

		healthy = err == nil

		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
