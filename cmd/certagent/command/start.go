package command

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/config"
)

// start is the start-up every command that acts shares (run, renew,
// wait, status): it parses args and loads the configuration, validated as
// run validates it when check is set (status shows the files whatever the
// configuration says). On failure it has printed why, and code is the exit
// status: 2.
func (c *commonFlags) start(args []string, check bool) (cfg config.Config, code int) {
	if err := c.parse(args); err != nil {
		return cfg, 2 // the flag package said why
	}
	var err error
	if check {
		var l loaded
		l, err = c.loadValid()
		cfg = l.cfg
	} else {
		cfg, err = c.load()
	}
	if err != nil {
		fmt.Fprintf(c.fs.Output(), "certagent: %v\n", err)
		return cfg, 2
	}
	return cfg, 0
}

// logger is the command's logger in format at cfg's level (Validate
// accepted it), and that level, which a reload may change; on failure it has
// printed why, and code is 2.
func (c *commonFlags) logger(format string, cfg config.Config) (log *zap.Logger, level zap.AtomicLevel, code int) {
	l, _ := config.ParseLogLevel(cfg.LogLevel)
	level = zap.NewAtomicLevelAt(l)
	log, err := newLogger(format, level, c.fs.Output())
	if err != nil {
		fmt.Fprintf(c.fs.Output(), "certagent: %v\n", err)
		return nil, level, 2
	}
	return log, level, 0
}

// runAgent builds an agent from cfg and opts and runs fn with it under the
// root context, which SIGTERM and SIGINT cancel: installed first, so that a
// signal during start-up still stops the command cleanly. It returns the
// exit status: 1 with the error printed if the agent cannot be built or fn
// fails, 0 otherwise.
func runAgent(stderr io.Writer, cfg config.Config, opts agent.Options, fn func(context.Context, *agent.Agent) error) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := agent.New(cfg, opts)
	if err == nil {
		err = fn(ctx, a)
	}
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	return 0
}
