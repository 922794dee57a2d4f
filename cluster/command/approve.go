package command

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap"

	"github.com/certagent/certagent/cluster/approver"
)

// parseApprove reads approve's flags into the approver's configuration.
func parseApprove(args []string, stderr io.Writer) (*approver.RunConfig, *serveFlags, error) {
	fs := flag.NewFlagSet("certagent-cluster approve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, f := &approver.RunConfig{}, &serveFlags{}
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig `file` (default: the pod's service account, in-cluster)")
	fs.Float64Var(&f.qps, "kube-api-qps", 20, "the API client's request rate limit")
	fs.IntVar(&f.burst, "kube-api-burst", 40, "the API client's burst")
	fs.Func("dns-suffix", "allow DNS name <node name>.`SUFFIX` besides the node's name and the DNS names its Node reports (repeat, or comma-separate)", func(v string) error {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.Policy.DNSSuffixes = append(cfg.Policy.DNSSuffixes, s)
			}
		}
		return nil
	})
	fs.DurationVar(&cfg.Policy.MaxExpiration, "max-duration", 0, "longest expirationSeconds a CSR may ask for (0: no cap; a CSR asking none gets the signer's --cluster-signing-duration)")
	fs.BoolVar(&cfg.Deny, "deny", false, "deny a refused CSR (default: leave it pending, decided again when a Node changes; an Event says why either way)")
	fs.StringVar(&cfg.HealthListen, "health-listen", ":8080", "plain-HTTP `address` of /healthz and /readyz (empty: none)")
	fs.IntVar(&cfg.Workers, "workers", 8, "CSRs decided in parallel")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "certagent-cluster approve: unexpected arguments %q\n", fs.Args())
		return nil, nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := cfg.Policy.Check(); err != nil {
		fmt.Fprintf(stderr, "certagent-cluster approve: %v\n", err)
		return nil, nil, err
	}
	return cfg, f, nil
}

// approveCommand runs the kubelet serving CSR approver until SIGTERM or SIGINT.
func approveCommand(args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cfg, f, err := parseApprove(args, stderr)
	if err != nil {
		return 2
	}
	log, err := newLogger(f.logFormat, f.logLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "certagent-cluster approve: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	cfg.Logger = log
	if cfg.REST, err = restConfig(f.kubeconfig, f.qps, f.burst); err != nil {
		log.Error("connecting to the API server", zap.Error(err))
		return 1
	}
	if err := approver.Run(ctx, *cfg); err != nil {
		log.Error("the approver could not start", zap.Error(err))
		return 1
	}
	log.Info("stopped")
	return 0
}
