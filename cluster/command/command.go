// Package command is certagent-cluster's command line: it parses flags,
// installs the signal handlers, builds the logger and the API client, and
// hands over to cluster/server (serve), cluster/approver (approve) or
// cluster/inittls (init-tls). It holds no behaviour of its own.
package command

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/cluster/server"
)

// Version is set at build time with -ldflags "-X github.com/certagent/certagent/cluster/command.Version=...".
var Version = "dev"

const usage = `certagent-cluster is the cluster side of certagent: the TPM attestation service (nodes prove
with their TPM that they are the node enrolled for their name, and get their kubelet
client certificate without any secret in their user-data), and the approver of kubelet
serving certificates that checks what the node owns.

Usage:
  certagent-cluster serve [flags]      run the attestation service (in the cluster, as the Deployment
                                       in packaging/cluster does)
  certagent-cluster approve [flags]    approve kubelet serving CSRs whose names the node owns: its
                                       name, its Node's addresses (docs/approver.md)
  certagent-cluster init-tls [flags]   make the service's CA and serving certificate (once, as the
                                       operator) and print the CA for the nodes' user-data
  certagent-cluster version            print the version

Run "certagent-cluster <command> -h" for the flags of a command.
`

// Main runs the command line args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serveCommand(args[1:], stderr)
	case "approve":
		return approveCommand(args[1:], stderr)
	case "init-tls":
		return initTLSCommand(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "certagent-cluster %s (%s, %s/%s)\n", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "certagent-cluster: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// serveFlags are serve's settings beyond server.Config's.
type serveFlags struct {
	kubeconfig, logFormat, logLevel string
	qps                             float64
	burst                           int
}

func parseServe(args []string, stderr io.Writer) (*server.Config, *serveFlags, error) {
	fs := flag.NewFlagSet("certagent-cluster serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, f := &server.Config{}, &serveFlags{}
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig `file` (default: the pod's service account, in-cluster)")
	fs.Float64Var(&f.qps, "kube-api-qps", 50, "the API client's request rate limit (each issued certificate costs two writes)")
	fs.IntVar(&f.burst, "kube-api-burst", 100, "the API client's burst")
	fs.StringVar(&cfg.Listen, "listen", ":8443", "HTTPS `address` nodes attest to")
	fs.StringVar(&cfg.HealthListen, "health-listen", ":8080", "plain-HTTP `address` of /healthz, /readyz and /metrics")
	fs.StringVar(&cfg.TLSCertFile, "tls-cert-file", "/etc/certagent-cluster/tls/tls.crt", "serving certificate, then its CA (PEM; the Secret init-tls made)")
	fs.StringVar(&cfg.TLSKeyFile, "tls-private-key-file", "/etc/certagent-cluster/tls/tls.key", "serving key (PEM)")
	fs.StringVar(&cfg.ManufacturerRoots, "manufacturer-roots", "", "PEM `file` of TPM manufacturer root CAs: if set, an EK certificate chaining to one is required")
	fs.StringVar(&cfg.ManufacturerIntermediates, "manufacturer-intermediates", "", "PEM `file` of the manufacturers' EK issuing CAs (TPMs do not carry them)")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", time.Minute, "time a node has from begin to finish")
	fs.DurationVar(&cfg.IssueTimeout, "issue-timeout", 20*time.Second, "time to wait for a CSR to be signed (keep it under the nodes' 30 s call timeout)")
	fs.DurationVar(&cfg.MaxExpiration, "max-expiration", 0, "longest client certificate lifetime a node may ask for, and asked for when it asks none (0: the node's and the signer's)")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "certagent-cluster serve: unexpected arguments %q\n", fs.Args())
		return nil, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, f, nil
}

// serveCommand runs the service until SIGTERM or SIGINT, then drains.
func serveCommand(args []string, stderr io.Writer) int {
	// Signals first: a SIGTERM during start-up (the permission checks, the
	// cache sync) must stop it cleanly too.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, f, err := parseServe(args, stderr)
	if err != nil {
		return 2
	}
	log, err := newLogger(f.logFormat, f.logLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "certagent-cluster serve: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	cfg.Logger, cfg.Version = log, Version
	if cfg.REST, err = restConfig(f.kubeconfig, f.qps, f.burst); err != nil {
		log.Error("connecting to the API server", zap.Error(err))
		return 1
	}
	if err := server.Run(ctx, *cfg); err != nil {
		log.Error("the attestation service could not start", zap.Error(err))
		return 1
	}
	return 0
}
