package command

import (
	"context"
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
)

func runCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("run", stderr)
	rf := c.addRunFlags()
	cfg, code := c.start(args, true)
	if code != 0 {
		return code
	}
	log, level, code := c.logger(*rf.logFormat, cfg)
	if code != 0 {
		return code
	}
	defer func() { _ = log.Sync() }()
	reload := sighup()
	opts := agent.Options{Logger: log, Level: &level}
	if *rf.once {
		opts.Notifier = agent.NopNotifier{}
		return runAgent(stderr, cfg, opts, func(ctx context.Context, a *agent.Agent) error {
			return stopped(a.OneShot(ctx, false, stdout))
		})
	}
	opts.NewEventClient = (*bootstrap.Bootstrapper).NodeEventClient // Events on the Node (docs/metrics.md)
	opts.CloseIdle = agent.CloseIdleConnections                     // docs/metrics.md, "Memory"
	return runAgent(stderr, cfg, opts, func(ctx context.Context, a *agent.Agent) error {
		return stopped(a.Run(ctx, reload, c.load))
	})
}

// stopped is err, except that a command stopped by a signal succeeded.
func stopped(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// sighup delivers SIGHUP (systemctl reload), one pending at most; a
// one-shot ignores it.
func sighup() <-chan struct{} {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return reload
}

func renewCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("renew", stderr)
	force := c.fs.Bool("force", false, "renew both certificates even if not due")
	timeout := c.fs.Duration("timeout", 0, "give up after this long (default 10m, or timeout in the config)")
	c.overrides = append(c.overrides, override{flag: "timeout", key: "timeout", apply: func(cfg *config.Config) {
		if *timeout > 0 {
			cfg.Timeout = config.Duration{Duration: *timeout}
		}
	}})
	c.addLogLevelFlag()
	cfg, code := c.start(args, true)
	if code != 0 {
		return code
	}
	log, _, code := c.logger("console", cfg)
	if code != 0 {
		return code
	}
	return runAgent(stderr, cfg, agent.Options{Logger: log, Notifier: agent.NopNotifier{}}, func(ctx context.Context, a *agent.Agent) error {
		return a.OneShot(ctx, *force, stdout)
	})
}
