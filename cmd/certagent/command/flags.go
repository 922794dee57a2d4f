package command

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/certagent/certagent/agent/config"
)

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
