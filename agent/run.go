package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
)

const (
	// recheck bounds every sleep, so a deadline is re-checked against the
	// wall clock at least this often: after a suspend or a clock jump the
	// agent renews within a minute instead of when a monotonic timer fires.
	recheck = time.Minute
	// debounce groups the file events of one atomic write.
	debounce = 250 * time.Millisecond
	// stopGrace bounds how long the workers get to finish after SIGTERM.
	stopGrace = 3 * time.Second
)

// Run keeps both certificates valid until ctx ends. It returns nil on a
// clean stop; failures are retried with back-off, never fatal. reload
// delivers SIGHUP: re-read the configuration (with load) and renew now.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}, load func() (Config, error)) error {
	if err := a.bootstrapper().Recover(); err != nil {
		a.log.Warn("cleaning up after an earlier crash", zap.Error(err))
	}
	cfg := a.config()
	if err := bootstrap.EnsureCertDir(cfg.CertDir); err != nil {
		return err
	}
	for _, d := range []string{filepath.Dir(cfg.Kubeconfig), filepath.Dir(cfg.BootstrapKubeconfig)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	events, err := rotate.WatchDirs(workCtx, a.log, debounce, cfg.CertDir, filepath.Dir(cfg.Kubeconfig), filepath.Dir(cfg.BootstrapKubeconfig))
	if err != nil {
		a.log.Warn("not watching files; changes are noticed within a minute", zap.Error(err))
	}
	if cfg.Metrics.Address != "" {
		// The certificates matter more than the metrics: without the
		// listener (say the port is taken) the agent still does its job.
		if stop, err := a.serveHTTP(workCtx, cfg.Metrics.Address); err != nil {
			a.log.Error("running without /metrics, /healthz and /readyz", zap.Error(err))
		} else {
			defer stop()
		}
	}
	kicks := map[bootstrap.Kind]chan struct{}{}
	var wg sync.WaitGroup
	for _, k := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
		kick := make(chan struct{}, 1)
		kicks[k] = kick
		wg.Add(1)
		go func() { defer wg.Done(); a.worker(workCtx, k, kick) }()
	}
	kickAll := func() {
		for _, ch := range kicks {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	var watchdog <-chan time.Time
	if d := a.notifier.WatchdogInterval(); d > 0 {
		t := a.clock.NewTicker(d / 2)
		defer t.Stop()
		watchdog = t.C()
	}
	tick := a.clock.NewTicker(recheck)
	defer tick.Stop()
	a.loopTurn()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-events:
			kickAll()
		case <-reload:
			a.reload(load)
			kickAll()
		case <-watchdog:
			a.notifier.Watchdog()
		case <-tick.C():
			a.publishStatus() // "renews in …" stays current
		}
		a.loopTurn()
	}
	a.log.Info("stopping")
	a.notifier.Stopping()
	stopWork()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopGrace):
		a.log.Warn("workers did not stop in time")
	}
	return nil
}

func (a *Agent) loopTurn() {
	a.mu.Lock()
	a.lastLoop = a.clock.Now()
	a.mu.Unlock()
}

// reload re-reads the configuration and forces a renewal. A bad file is
// logged and the running configuration kept.
func (a *Agent) reload(load func() (Config, error)) {
	if load != nil {
		cfg, err := load()
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil {
			err = a.apply(cfg)
		}
		if err != nil {
			a.log.Error("reload: keeping the running configuration", zap.Error(err))
		} else {
			a.log.Info("reload: configuration re-read")
		}
	}
	a.log.Info("reload: renewing the certificates now")
	a.ForceRenewal()
}

// worker keeps one certificate valid: it steps (obtain or renew if needed),
// then sleeps until the renewal deadline, a file change or a reload.
func (a *Agent) worker(ctx context.Context, kind bootstrap.Kind, kick <-chan struct{}) {
	log := a.log.With(zap.String("certificate", string(kind)))
	failures := 0
	for ctx.Err() == nil {
		if kind == bootstrap.Serving && !a.config().ServingEnabled() {
			if !a.sleep(ctx, kick, recheck, nil) {
				return
			}
			continue
		}
		var err error
		if kind == bootstrap.Client {
			_, err = a.stepClient(ctx)
		} else {
			err = a.stepServing(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		var delay time.Duration
		var interruptible func() bool // may a file event cut the wait short?
		switch {
		case err == nil:
			failures = 0
			a.update(kind, func(s *certState) { s.lastErr, s.waitingCSR = nil, "" })
			a.markReadyIfClient(kind)
			delay = a.untilDeadline(kind)
		case errors.Is(err, bootstrap.ErrNoCredentials) || errors.Is(err, errNeedClient):
			// Nothing to do until a file appears; not a failure to count.
			a.update(kind, func(s *certState) {
				s.lastErr, s.waitingCSR = err, ""
				if errors.Is(err, bootstrap.ErrNoCredentials) {
					s.notAfter, s.deadline = time.Time{}, time.Time{} // no usable certificate
				}
			})
			if errors.Is(err, bootstrap.ErrNoCredentials) {
				log.Info("waiting for credentials", zap.Error(err))
			}
			delay = recheck
		default:
			failures++
			b := rotate.DefaultBackoff
			if !bootstrap.IsTransient(err) {
				b = rotate.PermanentBackoff
			}
			delay = b.Delay(failures, a.rand())
			retryAt := a.clock.Now().Add(delay)
			a.update(kind, func(s *certState) { s.lastErr, s.retryAt, s.waitingCSR = err, retryAt, ""; s.errors++ })
			log.Warn("attempt failed", zap.Error(err), zap.Duration("retry_in", delay), zap.Int("failures", failures))
			// During a back-off only a change of our inputs (a new bootstrap
			// kubeconfig, a replaced kubelet.conf or certificate) or a reload
			// cuts the wait short: our own bookkeeping writes must not turn a
			// denial into a storm of new CSRs.
			before := a.inputs()
			interruptible = func() bool { return a.inputs() != before || a.forced(kind) }
		}
		if !a.sleep(ctx, kick, delay, interruptible) {
			return
		}
	}
}

// sleep waits up to d (at most recheck, so the wall clock is re-checked) or
// until a kick that interrupt accepts (nil: any kick). It reports false when
// ctx ended.
func (a *Agent) sleep(ctx context.Context, kick <-chan struct{}, d time.Duration, interrupt func() bool) bool {
	deadline := a.clock.Now().Add(d)
	for {
		wait := deadline.Sub(a.clock.Now())
		if wait <= 0 {
			return true
		}
		if wait > recheck {
			wait = recheck
		}
		select {
		case <-ctx.Done():
			return false
		case <-kick:
			if interrupt == nil || interrupt() {
				return true
			}
		case <-a.clock.After(wait):
		}
	}
}

// untilDeadline is how long until kind's stored certificate is due.
func (a *Agent) untilDeadline(kind bootstrap.Kind) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.state(kind).deadline.Sub(a.clock.Now())
	if d < 0 {
		return 0
	}
	return d
}

func (a *Agent) forced(kind bootstrap.Kind) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.force[kind]
}

// inputs fingerprints the files a person may drop or replace.
func (a *Agent) inputs() string {
	cfg := a.config()
	var b strings.Builder
	for _, p := range []string{cfg.BootstrapKubeconfig, cfg.Kubeconfig,
		bootstrap.CurrentPath(cfg.CertDir, bootstrap.Client), bootstrap.CurrentPath(cfg.CertDir, bootstrap.Serving)} {
		if fi, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", p, fi.ModTime().UnixNano(), fi.Size())
		} else {
			fmt.Fprintf(&b, "%s:-;", p)
		}
	}
	return b.String()
}

// markReadyIfClient sends READY=1 the first time the client certificate is valid.
func (a *Agent) markReadyIfClient(kind bootstrap.Kind) {
	if kind != bootstrap.Client {
		return
	}
	a.mu.Lock()
	first := !a.ready
	a.ready = true
	a.mu.Unlock()
	if first {
		a.log.Info("ready: kubelet.conf holds a valid client certificate")
		a.notifier.Ready()
	}
}

// publishStatus sends the STATUS line if it changed.
func (a *Agent) publishStatus() {
	line := a.statusLine()
	a.mu.Lock()
	changed := line != a.status
	a.status = line
	a.mu.Unlock()
	if changed {
		a.notifier.Status(line)
	}
}
