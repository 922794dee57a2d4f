package agent

import (
	"slices"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/config"
)

// restartOnly are the settings a running agent cannot change: its files,
// its identity and its listener. A reload that changes one is refused whole.
var restartOnly = []string{"nodeName", "certDir", "kubeconfig", "bootstrapKubeconfig", "metrics.address", "trust.follow", "trust.caFile"}

// Reload re-reads the configuration with load (Run calls it on SIGHUP,
// systemctl reload) and applies what changed: new serving names make the
// serving certificate due (it no longer covers them), a new renewal policy
// moves the deadlines, new hooks run next time, a new log level applies at
// once. Nothing is renewed for the reload's sake (`certagent renew --force`
// does that). A file that does not load, or a change that needs a restart,
// is logged and the running configuration kept whole.
func (a *Agent) Reload(load func() (config.Config, error)) {
	if load == nil {
		return
	}
	cfg, err := load()
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		a.log.Error("reload: keeping the running configuration", zap.Error(err))
		return
	}
	old := a.Config()
	changed := config.ChangedKeys(old, cfg)
	if len(changed) == 0 {
		a.log.Info("reload: configuration unchanged")
		return
	}
	var needRestart []string
	for _, k := range changed {
		if slices.Contains(restartOnly, k) {
			needRestart = append(needRestart, k)
		}
	}
	if len(needRestart) > 0 {
		a.log.Error("reload: refused, keeping the running configuration: these settings take effect only on a restart (systemctl restart certagent)",
			zap.Strings("settings", needRestart))
		return
	}
	b, err := a.newBootstrapper(cfg)
	if err != nil {
		a.log.Error("reload: keeping the running configuration", zap.Error(err))
		return
	}
	oldB := a.bootstrapper()
	b.Adopt(oldB)
	a.mu.Lock()
	a.cfg, a.b, a.policy = cfg, b, cfg.RenewalPolicy()
	a.mu.Unlock()
	oldB.CloseIdleConnections() // the new one dials its own
	a.log.Info("reload: configuration applied", zap.Strings("changed", changed))
	if level, err := config.ParseLogLevel(cfg.LogLevel); err == nil && a.opts.Level != nil { // Validate accepted it
		a.opts.Level.SetLevel(level) // from here on, including the lines below
	}
	a.publishStatus()
	a.kickAll() // each loop looks again: due now, or names no longer covered?
}
