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
	fs                  *flag.FlagSet
	config              string
	nodeName            string
	bootstrapKubeconfig string
	kubeconfig          string
	certDir             string
}

func newCommonFlags(name string, stderr io.Writer) *commonFlags {
	c := &commonFlags{fs: flag.NewFlagSet("certagent "+name, flag.ContinueOnError)}
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.config, "config", DefaultConfigPath, "configuration file (a missing default file means defaults)")
	c.fs.StringVar(&c.nodeName, "node-name", "", "node name (default: the host name, lower-cased)")
	c.fs.StringVar(&c.bootstrapKubeconfig, "bootstrap-kubeconfig", "", "bootstrap-token kubeconfig (default /etc/kubernetes/bootstrap-kubelet.conf)")
	c.fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubelet kubeconfig to write (default /etc/kubernetes/kubelet.conf)")
	c.fs.StringVar(&c.certDir, "cert-dir", "", "certificate directory (default /var/lib/kubelet/pki)")
	return c
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

// load reads the config file and applies the flags that were set.
func (c *commonFlags) load() (Config, error) {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg, err := LoadConfig(c.config, set["config"])
	if err != nil {
		return cfg, err
	}
	if set["node-name"] {
		cfg.NodeName = c.nodeName
	}
	if set["bootstrap-kubeconfig"] {
		cfg.BootstrapKubeconfig = c.bootstrapKubeconfig
	}
	if set["kubeconfig"] {
		cfg.Kubeconfig = c.kubeconfig
	}
	if set["cert-dir"] {
		cfg.CertDir = c.certDir
	}
	if cfg.NodeName == "" {
		host, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("reading the host name for the node name: %w (set --node-name)", err)
		}
		cfg.NodeName = strings.ToLower(host)
	}
	return cfg, nil
}

func runCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("run", stderr)
	once := c.fs.Bool("once", false, "obtain what is missing, then exit 0; exit non-zero with a message if it cannot")
	serving := c.fs.Bool("serving", true, "request the kubelet serving certificate")
	timeout := c.fs.Duration("timeout", 0, "with --once, give up after this long (default 10m, or timeout in the config)")
	logFormat := c.fs.String("log-format", "console", "log format: console or json")
	if err := c.parse(args); err != nil {
		return 2
	}
	cfg, err := c.load()
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	cfg = c.applyRunFlags(cfg, *serving, *timeout)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "certagent: invalid configuration: %v\n", err)
		return 2
	}
	log, err := newLogger(*logFormat, stderr)
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
	if *once {
		opts.Notifier = nopNotifier{}
	} else {
		opts.NewEventClient = bootstrap.NewEventClient // Events on the Node (docs/metrics.md)
	}
	a, err := New(cfg, opts)
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 1
	}
	if *once {
		err = a.OneShot(ctx, false, stdout)
	} else {
		err = a.Run(ctx, reload, func() (Config, error) { return c.reload(*serving, *timeout) })
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

// applyRunFlags applies the run-only flags that were set.
func (c *commonFlags) applyRunFlags(cfg Config, serving bool, timeout time.Duration) Config {
	c.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "serving":
			cfg.Serving.Enabled = &serving
		case "timeout":
			cfg.Timeout = Duration{timeout}
		}
	})
	return cfg
}

// reload re-reads the config file with the same flags on top (SIGHUP).
func (c *commonFlags) reload(serving bool, timeout time.Duration) (Config, error) {
	cfg, err := c.load()
	if err != nil {
		return cfg, err
	}
	return c.applyRunFlags(cfg, serving, timeout), nil
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
	log, err := newLogger("console", stderr)
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
