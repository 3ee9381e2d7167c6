package daemon

import (
	"strings"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/systemd"
)

// restartOnly are the settings a running daemon cannot change: its sockets
// and the shape of its logger.
var restartOnly = map[string]bool{
	"bind_address": true, "bind_port": true, "link_local_address": true, "reuse_port": true, "health_address": true, "health_port": true,
	"log_format": true, "enable_discovery": true, "kubeconfig": true, "tls_server_name": true,
	"state_directory": true, "cache_ttl": true, "max_discovered": true,
}

// reload re-reads the configuration and applies what can change live. A
// configuration that fails validation changes nothing.
func (d *Daemon) reload() {
	if d.opts.Reload == nil {
		d.log.Warn("reload requested, but this daemon was started without a configuration source")

		return
	}

	d.notify.Notify(systemd.Reloading())

	next, err := d.opts.Reload()
	if err != nil {
		d.mu.Lock()
		d.reloadErr = err
		d.reloads.Failed++
		d.mu.Unlock()

		d.log.Error("reload rejected; the running configuration stays in force",
			zap.Strings("errors", strings.Split(err.Error(), "\n")))
		d.notify.Notify("READY=1\nSTATUS=" + d.summary())

		return
	}

	d.apply(next)
	d.notify.Notify("READY=1\nSTATUS=" + d.summary())
}

// apply switches to next, except for restart-only settings, which keep
// their running values and are reported.
func (d *Daemon) apply(next config.Config) {
	cur := d.config()

	var changed, needRestart []string

	for _, s := range config.Settings() {
		before, after := s.Format(&cur), s.Format(&next)
		if before == after {
			continue
		}

		if restartOnly[s.Key] {
			needRestart = append(needRestart, s.Key+" "+before+" -> "+after)
			s.Copy(&next, &cur)

			continue
		}

		changed = append(changed, s.Key+" "+before+" -> "+after)
	}

	d.mu.Lock()
	d.set.static = d.staticEndpoints(next.Endpoints)
	eps := d.set.endpoints()
	d.mu.Unlock()

	if err := d.ups.Reconcile(eps); err != nil {
		d.log.Error("reload: upstreams not changed", zap.Error(err))
	}

	d.lb.Apply(engineSettings(next))
	d.ups.SetRules(rules(next))
	d.probe.Apply(d.checkSettings(next))

	if d.opts.Level != nil {
		_ = d.opts.Level.UnmarshalText([]byte(next.LogLevel))
	}

	d.mu.Lock()
	d.cfg = next
	d.reloadErr = nil
	d.reloads.OK++
	d.mu.Unlock()

	d.log.Info("configuration reloaded", zap.Strings("changed", changed))

	if len(needRestart) > 0 {
		d.log.Warn("some changed settings apply only after a restart (systemctl restart extractedprism)",
			zap.Strings("settings", needRestart))
	}
}
