package agent

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
	"time"

	"github.com/certagent/certagent/bootstrap"
)

// Version is set at build time with -ldflags "-X github.com/certagent/certagent/agent.Version=...".
var Version = "dev"

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
		fmt.Fprintf(stdout, "certagent %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
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
	flag  string        // the flag's name
	key   string        // the setting's dotted key, as docs/config.md writes it
	apply func(*Config) // sets the flag's value
}

func newCommonFlags(name string, stderr io.Writer) *commonFlags {
	c := &commonFlags{fs: flag.NewFlagSet("certagent "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.config, "config", DefaultConfigPath, "configuration file (a missing default file means defaults)")
	c.stringFlag("node-name", "nodeName", "node name (default: the host name, lower-cased)",
		func(cfg *Config, v string) { cfg.NodeName = v })
	c.stringFlag("bootstrap-kubeconfig", "bootstrapKubeconfig", "bootstrap-token kubeconfig (default /etc/kubernetes/bootstrap-kubelet.conf)",
		func(cfg *Config, v string) { cfg.BootstrapKubeconfig = v })
	c.stringFlag("kubeconfig", "kubeconfig", "kubelet kubeconfig to write (default /etc/kubernetes/kubelet.conf)",
		func(cfg *Config, v string) { cfg.Kubeconfig = v })
	c.stringFlag("cert-dir", "certDir", "certificate directory (default /var/lib/kubelet/pki)",
		func(cfg *Config, v string) { cfg.CertDir = v })
	return c
}

// stringFlag adds a flag that overrides the setting key when it is set.
func (c *commonFlags) stringFlag(name, key, usage string, set func(*Config, string)) {
	v := c.fs.String(name, "", usage)
	c.overrides = append(c.overrides, override{flag: name, key: key, apply: func(cfg *Config) { set(cfg, *v) }})
}

// addLogLevelFlag adds --log-level; an unknown level is refused while parsing.
func (c *commonFlags) addLogLevelFlag() {
	var level string
	c.fs.Func("log-level", "log `level`: debug, info, warn or error (default info, or logLevel in the config)", func(s string) error {
		if _, err := parseLogLevel(s); err != nil {
			return err
		}
		level = s
		return nil
	})
	c.overrides = append(c.overrides, override{flag: "log-level", key: "logLevel", apply: func(cfg *Config) { cfg.LogLevel = level }})
}

// addServingFlag adds --serving, which overrides serving.enabled when set.
func (c *commonFlags) addServingFlag(usage string) {
	serving := c.fs.Bool("serving", true, usage)
	c.overrides = append(c.overrides, override{flag: "serving", key: "serving.enabled", apply: func(cfg *Config) {
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
	c.overrides = append(c.overrides, override{flag: "timeout", key: "timeout", apply: func(cfg *Config) { cfg.Timeout = Duration{*timeout} }})
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
	cfg      Config
	files    []configFile // the config file and drop-ins applied, in order
	flags    []override   // the flags that were set
	hostName bool         // nodeName is the host name
}

// load reads the config file and its drop-ins and applies the flags that
// were set. SIGHUP reloads through it, so the flags stay on top.
func (c *commonFlags) load() (Config, error) {
	l, err := c.loadSources()
	return l.cfg, err
}

// loadSources is load, also saying where each value came from.
func (c *commonFlags) loadSources() (loaded, error) {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var l loaded
	var err error
	l.cfg, l.files, err = loadConfigFiles(c.config, set["config"])
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

func runCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("run", stderr)
	rf := c.addRunFlags()
	if err := c.parse(args); err != nil {
		return 2
	}
	l, err := c.loadValid()
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	cfg := l.cfg
	level, _ := parseLogLevel(cfg.LogLevel) // Validate accepted it
	log, err := newLogger(*rf.logFormat, level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()

	// Signals first: a SIGTERM during start-up still stops us cleanly.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
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
	opts := Options{Logger: log}
	if *rf.once {
		opts.Notifier = nopNotifier{}
	} else {
		opts.NewEventClient = (*bootstrap.Bootstrapper).NodeEventClient // Events on the Node (docs/metrics.md)
		opts.CloseIdle = closeIdleConnections                           // docs/metrics.md, "Memory"
	}
	a, err := New(cfg, opts)
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	if *rf.once {
		err = a.OneShot(ctx, false, stdout)
	} else {
		err = a.Run(ctx, reload, c.load)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return 0
		}
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	return 0
}

// sinceRound formats a duration for people: whole seconds, minutes or days.
func sinceRound(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	case d >= time.Hour:
		return d.Round(time.Minute).String()
	default:
		return d.Round(time.Second).String()
	}
}

func renewCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("renew", stderr)
	force := c.fs.Bool("force", false, "renew both certificates even if not due")
	timeout := c.fs.Duration("timeout", 0, "give up after this long (default 10m, or timeout in the config)")
	c.addLogLevelFlag()
	if err := c.parse(args); err != nil {
		return 2
	}
	cfg, err := c.load()
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	if *timeout > 0 {
		cfg.Timeout = Duration{*timeout}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "certagent: invalid configuration: %v\n", err)
		return 2
	}
	level, _ := parseLogLevel(cfg.LogLevel) // Validate accepted it
	log, err := newLogger("console", level, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := New(cfg, Options{Logger: log, Notifier: nopNotifier{}})
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	if err := a.OneShot(ctx, *force, stdout); err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	return 0
}
