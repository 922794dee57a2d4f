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

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/internal/failpoint"
	"github.com/certagent/certagent/rotate"
)

const (
	// debounce groups the file events of one atomic write.
	debounce = 250 * time.Millisecond
	// pollInputs is how often the input files are checked when they cannot
	// be watched (inotify limits reached).
	pollInputs = time.Minute
	// stopGrace bounds how long the workers get to finish after SIGTERM.
	stopGrace = 3 * time.Second
	// hungAfter is how long a worker may stay busy (files, API requests with
	// their 30 s timeouts) before it counts as hung; hook timeouts add to it.
	hungAfter = 5 * time.Minute
)

// worker is one certificate's renewal loop.
type worker struct {
	kind bootstrap.Kind
	loop *rotate.Loop
	live *rotate.Liveness
}

// Run keeps both certificates valid until ctx ends. It returns nil on a
// clean stop; failures are retried with back-off, never fatal. reload
// delivers SIGHUP: re-read the configuration with load and apply what changed.
func (a *Agent) Run(ctx context.Context, reload <-chan struct{}, load func() (config.Config, error)) error {
	cfg := a.Config()
	lock, err := a.prepare(ctx, cfg)
	if err != nil {
		return err
	}
	defer lock.Release()
	if a.opts.CloseIdle != nil {
		a.idle = &settler{delay: settleDelay, fn: func() { a.opts.CloseIdle(a.bootstrapper()) }} // before the goroutines that use it start
		defer a.idle.stop()
	}
	var bg sync.WaitGroup // goroutines that end with ctx
	defer bg.Wait()
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var stops cleanups // the listeners and tickers, stopped before the goroutines end
	defer stops.run()
	in := a.startServices(bgCtx, &bg, cfg, &stops)
	workers, err := a.startWorkers(ctx, in.jumps)
	if err != nil {
		return err
	}
	a.supervise(ctx, in, reload, load, &stops)
	a.log.Info("stopping")
	a.notifier.Stopping()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-a.clock.After(stopGrace):
		a.log.Warn("workers did not stop in time")
	}
	return nil
}

// cleanups run in reverse order, as defers do.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }

func (c cleanups) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// prepare readies the directories: the certificate directory (created, and
// locked: one writer), what a crash left there cleaned up, the kubeconfigs'
// directories created.
func (a *Agent) prepare(ctx context.Context, cfg config.Config) (*dirLock, error) {
	if err := bootstrap.EnsureCertDir(cfg.CertDir); err != nil {
		return nil, err
	}
	lock, err := a.lockDaemon(ctx, cfg.CertDir)
	if err != nil {
		return nil, err
	}
	if err := a.bootstrapper().Recover(); err != nil {
		a.log.Warn("cleaning up after an earlier crash", zap.Error(err))
	}
	for _, d := range []string{filepath.Dir(cfg.Kubeconfig), filepath.Dir(cfg.BootstrapKubeconfig)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			lock.Release()
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	return lock, nil
}

// wakeups are what wakes the workers: wall-clock jumps, and file changes
// (watched, or, without inotify, polled).
type wakeups struct {
	jumps  rotate.Jumps
	events <-chan struct{}
	poll   <-chan time.Time
}

// startServices starts, until ctx ends, what runs beside the workers: the
// jump detector and file watch (the workers' inputs), the metrics and health
// listener, the Event writer and the control socket. A listener that cannot
// start is logged, never fatal.
func (a *Agent) startServices(ctx context.Context, bg *sync.WaitGroup, cfg config.Config, stops *cleanups) wakeups {
	in := wakeups{jumps: a.opts.Jumps}
	if in.jumps == nil {
		d := rotate.NewJumpDetector(a.clock, func(j time.Duration) {
			a.log.Info("the wall clock jumped (suspend or clock step): re-checking every deadline", zap.Duration("jump", j))
		})
		bg.Go(func() { d.Run(ctx) })
		in.jumps = d
	}
	events, err := a.opts.Watch(ctx, a.log, cfg.CertDir, filepath.Dir(cfg.Kubeconfig), filepath.Dir(cfg.BootstrapKubeconfig))
	in.events = events
	if err != nil {
		// Typically the inotify limits (fs.inotify.max_user_instances or
		// max_user_watches) on a busy node: fall back to checking the files.
		a.log.Warn("not watching files; checking them every minute instead", zap.Error(err))
		t := a.clock.NewTicker(pollInputs)
		stops.add(t.Stop)
		in.poll = t.C()
	}
	if cfg.Metrics.Address != "" {
		// The certificates matter more than the metrics: without the
		// listener (say the port is taken) the agent still does its job.
		if stop, err := a.serveHTTP(ctx, cfg.Metrics.Address); err != nil {
			a.log.Error("running without /metrics, /healthz and /readyz", zap.Error(err))
		} else {
			stops.add(stop)
		}
	}
	if a.events != nil {
		bg.Go(func() { a.events.Run(ctx) })
	}
	if cfg.Trust.Follow {
		bg.Go(func() { a.followTrust(ctx) })
	}
	if !a.opts.NoControlSocket {
		if stop, err := a.serveControl(ctx, cfg.CertDir); err != nil {
			a.log.Warn("certagent renew cannot reach this daemon; it will wait for the lock instead", zap.Error(err))
		} else {
			stops.add(stop)
		}
	}
	return in
}

// supervise runs until ctx ends: it kicks the workers when their inputs
// change, reloads on SIGHUP, and tells the watchdog the daemon is alive
// while no worker is stuck.
func (a *Agent) supervise(ctx context.Context, in wakeups, reload <-chan struct{}, load func() (config.Config, error), stops *cleanups) {
	var watchdog <-chan time.Time
	if d := a.notifier.WatchdogInterval(); d > 0 {
		t := a.clock.NewTicker(d / 2)
		stops.add(t.Stop)
		watchdog = t.C()
	}
	files := a.inputs()
	hung := false
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-in.events:
			a.kickAll()
		case <-in.poll:
			if now := a.inputs(); now != files {
				files = now
				a.kickAll()
			}
		case <-reload:
			a.Reload(load)
		case <-watchdog:
			if w, busy := a.hungWorker(); w != "" {
				if !hung {
					a.log.Error("a worker is stuck: not telling the watchdog, so systemd restarts certagent", zap.String("certificate", w), zap.Duration("busy_for", busy))
				}
				hung = true
				continue
			}
			hung = false
			a.notifier.Watchdog()
		}
	}
}

// startWorkers starts one renewal loop per certificate.
func (a *Agent) startWorkers(ctx context.Context, jumps rotate.Jumps) (*sync.WaitGroup, error) {
	var wg sync.WaitGroup
	for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
		live := &rotate.Liveness{}
		loop, err := rotate.NewLoop(rotate.LoopConfig{
			Task:       servingGate{a: a, kind: kind, inner: task{a: a, kind: kind, ctx: ctx}},
			Policy:     a.renewalPolicy,
			Classify:   classify,
			RetryAfter: bootstrap.RetryAfter,
			Clock:      a.clock,
			Jumps:      jumps,
			Rand:       a.rand,
			Inputs:     a.inputs,
			Observe:    func(o rotate.Outcome) { a.observe(kind, o) },
			Live:       live,
		})
		if err != nil {
			return nil, err
		}
		a.mu.Lock()
		a.loops[kind] = &worker{kind: kind, loop: loop, live: live}
		a.mu.Unlock()
		wg.Go(func() { loop.Run(ctx) })
	}
	return &wg, nil
}

// servingGate keeps the serving loop quiet while the serving certificate is
// turned off.
type servingGate struct {
	a     *Agent
	kind  bootstrap.Kind
	inner rotate.Task
}

// errServingOff: serving certificates are not requested (serving.enabled: false).
var errServingOff = errors.New("serving certificates are turned off (serving.enabled: false)")

func (g servingGate) Step(ctx context.Context, renew bool) (rotate.Result, error) {
	if g.kind == bootstrap.Serving && !g.a.Config().ServingEnabled() {
		return rotate.Result{}, errServingOff
	}
	return g.inner.Step(ctx, renew)
}

func (a *Agent) kickAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.loops {
		w.loop.Kick()
	}
}

// hungWorker names a worker that has been busy for longer than any step
// should take, and for how long.
func (a *Agent) hungWorker() (string, time.Duration) {
	limit := hungAfter
	for _, h := range a.Config().Hooks.PostRenew {
		t := h.Timeout.Duration
		if t == 0 {
			t = defaultHookTimeout
		}
		limit += t
	}
	limit = failpoint.Duration("CERTAGENT_HUNG_AFTER", limit)
	now := a.clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, w := range a.loops {
		if busy := w.live.BusyFor(now); busy > limit {
			return string(w.kind), busy
		}
	}
	return "", 0
}

// inputs fingerprints the files a person may drop or replace.
func (a *Agent) inputs() string {
	cfg := a.Config()
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
