package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
)

const usage = `certagent obtains and renews the kubelet's client and serving certificates.

Usage:
  certagent run [flags]        run the agent (under systemd); --once to obtain what is missing and exit
  certagent renew [--force]    renew the certificates that are due (all with --force), then exit
  certagent status [flags]     show the certificates on disk and any pending request (-o text|json)
  certagent config [flags]     show the effective configuration and where each value comes from
                               (-o text|json); --check validates it as run would, starting nothing
  certagent wait [flags]       block until a kubelet can start: kubelet.conf accepted and (unless
                               serving is off) the serving certificate in place (kubelet's ExecStartPre)
  certagent version            print the version

Run "certagent <command> -h" for the flags of a command.
`

// Main runs the command line args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runCommand(args[1:], stdout, stderr)
	case "status":
		return statusCommand(args[1:], stdout, stderr)
	case "renew":
		return renewCommand(args[1:], stdout, stderr)
	case "config":
		return configCommand(args[1:], stdout, stderr)
	case "wait":
		return waitCommand(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "certagent %s (%s, %s/%s)\n", agent.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "certagent: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// commonFlags are the settings every command shares; set ones override the config file.
type commonFlags struct {
	fs        *flag.FlagSet
	config    string
	overrides []override
}

// override is a flag that, when set, overrides one setting of the file.
type override struct {
	flag  string               // the flag's name
	key   string               // the setting's dotted key, as docs/config.md writes it
	apply func(*config.Config) // sets the flag's value
}

func newCommonFlags(name string, stderr io.Writer) *commonFlags {
	c := &commonFlags{fs: flag.NewFlagSet("certagent "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.config, "config", config.DefaultPath, "configuration file (a missing default file means defaults)")
	c.stringFlag("node-name", "nodeName", "node name (default: the host name, lower-cased)",
		func(cfg *config.Config, v string) { cfg.NodeName = v })
	c.stringFlag("bootstrap-kubeconfig", "bootstrapKubeconfig", "bootstrap-token kubeconfig (default /etc/kubernetes/bootstrap-kubelet.conf)",
		func(cfg *config.Config, v string) { cfg.BootstrapKubeconfig = v })
	c.stringFlag("kubeconfig", "kubeconfig", "kubelet kubeconfig to write (default /etc/kubernetes/kubelet.conf)",
		func(cfg *config.Config, v string) { cfg.Kubeconfig = v })
	c.stringFlag("cert-dir", "certDir", "certificate directory (default /var/lib/kubelet/pki)",
		func(cfg *config.Config, v string) { cfg.CertDir = v })
	return c
}

// stringFlag adds a flag that overrides the setting key when it is set.
func (c *commonFlags) stringFlag(name, key, usage string, set func(*config.Config, string)) {
	v := c.fs.String(name, "", usage)
	c.overrides = append(c.overrides, override{flag: name, key: key, apply: func(cfg *config.Config) { set(cfg, *v) }})
}

// addLogLevelFlag adds --log-level; an unknown level is refused while parsing.
func (c *commonFlags) addLogLevelFlag() {
	var level string
	c.fs.Func("log-level", "log `level`: debug, info, warn or error (default info, or logLevel in the config)", func(s string) error {
		if _, err := config.ParseLogLevel(s); err != nil {
			return err
		}
		level = s
		return nil
	})
	c.overrides = append(c.overrides, override{flag: "log-level", key: "logLevel", apply: func(cfg *config.Config) { cfg.LogLevel = level }})
}

// addServingFlag adds --serving, which overrides serving.enabled when set.
func (c *commonFlags) addServingFlag(usage string) {
	serving := c.fs.Bool("serving", true, usage)
	c.overrides = append(c.overrides, override{flag: "serving", key: "serving.enabled", apply: func(cfg *config.Config) {
		v := *serving
		cfg.Serving.Enabled = &v
	}})
}

// runFlags are run's flags beyond the common ones that are not settings.
type runFlags struct {
	once      *bool
	logFormat *string
}

// addRunFlags adds run's own flags (certagent config takes them too, so
// that run's command line can be checked as it is).
func (c *commonFlags) addRunFlags() runFlags {
	r := runFlags{once: c.fs.Bool("once", false, "obtain what is missing, then exit 0; exit non-zero with a message if it cannot")}
	c.addServingFlag("request the kubelet serving certificate")
	timeout := c.fs.Duration("timeout", 0, "with --once, give up after this long (default 10m, or timeout in the config)")
	c.overrides = append(c.overrides, override{flag: "timeout", key: "timeout", apply: func(cfg *config.Config) { cfg.Timeout = config.Duration{Duration: *timeout} }})
	r.logFormat = c.fs.String("log-format", "console", "log format: console or json")
	c.addLogLevelFlag()
	return r
}

// parse parses args and rejects leftovers: "certagent run --once renew"
// must not quietly run the daemon.
func (c *commonFlags) parse(args []string) error {
	if err := c.fs.Parse(args); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		fmt.Fprintf(c.fs.Output(), "%s: unexpected argument %q (flags only; see -h)\n", c.fs.Name(), c.fs.Arg(0))
		return fmt.Errorf("unexpected argument %q", c.fs.Arg(0))
	}
	return nil
}

// loaded is a configuration and where its values came from.
type loaded struct {
	cfg      config.Config
	files    []config.File // the config file and drop-ins applied, in order
	flags    []override    // the flags that were set
	hostName bool          // nodeName is the host name
}

// load reads the config file and its drop-ins and applies the flags that
// were set. SIGHUP reloads through it, so the flags stay on top.
func (c *commonFlags) load() (config.Config, error) {
	l, err := c.loadSources()
	return l.cfg, err
}

// loadSources is load, also saying where each value came from.
func (c *commonFlags) loadSources() (loaded, error) {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var l loaded
	var err error
	l.cfg, l.files, err = config.LoadFiles(c.config, set["config"])
	if err != nil {
		return l, err
	}
	for _, o := range c.overrides {
		if set[o.flag] {
			o.apply(&l.cfg)
			l.flags = append(l.flags, o)
		}
	}
	if l.cfg.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return l, fmt.Errorf("reading the host name for the node name: %w (set --node-name)", err)
		}
		l.cfg.NodeName, l.hostName = strings.ToLower(host), true
	}
	return l, nil
}

// loadValid is load and Validate: what run checks before it starts. Its
// error is what run prints (certagent config --check prints the same).
func (c *commonFlags) loadValid() (loaded, error) {
	l, err := c.loadSources()
	if err != nil {
		return l, err
	}
	if err := l.cfg.Validate(); err != nil {
		return l, fmt.Errorf("invalid configuration: %w", err)
	}
	return l, nil
}

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
