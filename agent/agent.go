package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
)

// Options are the agent's injected dependencies.
type Options struct {
	Logger *zap.Logger
	// Clock defaults to the real clock; tests pass a fake one.
	Clock clock.WithTicker
	// Rand returns uniform numbers in [0, 1) for jitter; default math/rand.
	Rand func() float64
	// Bootstrap overrides parts of the bootstrap configuration (tests inject clients).
	Bootstrap func(*bootstrap.Config)
}

// Agent keeps the kubelet's certificates in place.
type Agent struct {
	cfg     Config
	log     *zap.Logger
	clock   clock.WithTicker
	rand    func() float64
	b       *bootstrap.Bootstrapper
	policy  rotate.Policy
	backoff rotate.Backoff

	mu      sync.Mutex
	waiting map[bootstrap.Kind]string // CSR being waited on, by kind
	jitter  map[string]float64        // per certificate serial, so a deadline is stable
}

// New builds an agent from a validated configuration.
func New(cfg Config, opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}
	a := &Agent{
		cfg: cfg, log: opts.Logger, clock: opts.Clock, rand: opts.Rand,
		policy:  rotate.Policy{RenewBefore: cfg.Rotation.RenewBefore.Duration},
		backoff: rotate.DefaultBackoff,
		waiting: map[bootstrap.Kind]string{},
		jitter:  map[string]float64{},
	}
	ips, err := cfg.ServingIPs()
	if err != nil {
		return nil, err
	}
	bc := bootstrap.Config{
		NodeName:                cfg.NodeName,
		CertDir:                 cfg.CertDir,
		KubeconfigPath:          cfg.Kubeconfig,
		BootstrapKubeconfigPath: cfg.BootstrapKubeconfig,
		IssuerCAFile:            cfg.IssuerCAFile,
		AllowInsecureBootstrap:  cfg.AllowInsecureBootstrap,
		ServingDNSNames:         cfg.Serving.DNSNames,
		ServingIPs:              ips,
		ExpirationSeconds:       int32(cfg.Rotation.RequestedDuration.Seconds()),
		Clock:                   opts.Clock,
		Logger:                  opts.Logger.Named("bootstrap"),
		OnWaiting:               a.setWaiting,
	}
	if opts.Bootstrap != nil {
		opts.Bootstrap(&bc)
	}
	if a.b, err = bootstrap.New(bc); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) setWaiting(kind bootstrap.Kind, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if name == "" {
		delete(a.waiting, kind)
	} else {
		a.waiting[kind] = name
	}
}

func (a *Agent) waitingFor(kind bootstrap.Kind) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.waiting[kind]
}

// RunOnce obtains whatever is missing or due and returns; transient failures
// are retried with back-off until cfg.Timeout, the others end it at once.
func (a *Agent) RunOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout.Duration)
	defer cancel()
	if err := a.b.Recover(); err != nil {
		return err
	}
	rc, err := a.retry(ctx, true, bootstrap.Client, a.ensureClient)
	if err != nil {
		return err
	}
	if !a.cfg.ServingEnabled() {
		return nil
	}
	_, err = a.retry(ctx, true, bootstrap.Serving, func(ctx context.Context) (*rest.Config, error) {
		return rc, a.ensureServing(ctx, rc)
	})
	return err
}

// ensureClient returns the node's credentials, bootstrapping or renewing the
// client certificate first if it is missing, expired or due.
func (a *Agent) ensureClient(ctx context.Context) (*rest.Config, error) {
	rc, leaf, err := a.b.ValidClient()
	if err != nil || a.due(leaf) == nil {
		rc, _, err = a.b.EnsureClient(ctx)
		return rc, err
	}
	if a.clock.Now().Before(*a.due(leaf)) {
		_, _, err = a.b.EnsureClient(ctx) // still tidies a leftover bootstrap kubeconfig
		return rc, err
	}
	a.log.Info("renewing the client certificate", zap.Time("not_after", leaf.NotAfter))
	if _, err := a.b.Obtain(ctx, bootstrap.Client, rc, a.cfg.Kubeconfig); err != nil {
		return nil, err
	}
	return rc, nil
}

// ensureServing obtains the serving certificate if it is missing, does not
// cover the wanted names, or is due.
func (a *Agent) ensureServing(ctx context.Context, rc *rest.Config) error {
	pair, err := bootstrap.LoadCurrent(a.cfg.CertDir, bootstrap.Serving)
	if err == nil {
		if d := a.due(pair.Leaf); d != nil && !a.clock.Now().Before(*d) {
			a.log.Info("renewing the serving certificate", zap.Time("not_after", pair.Leaf.NotAfter))
			_, err := a.b.Obtain(ctx, bootstrap.Serving, rc, a.cfg.Kubeconfig)
			return err
		}
	}
	_, err = a.b.EnsureServing(ctx, rc)
	return err
}

// due returns the renewal deadline of c, or nil if c is nil.
func (a *Agent) due(c *x509.Certificate) *time.Time {
	if c == nil {
		return nil
	}
	a.mu.Lock()
	j, ok := a.jitter[c.SerialNumber.String()]
	if !ok {
		j = a.rand()
		a.jitter[c.SerialNumber.String()] = j
	}
	a.mu.Unlock()
	d := a.policy.Deadline(c.NotBefore, c.NotAfter, j)
	return &d
}

// retry calls fn until it succeeds or ctx ends. With once, errors that need a
// person (rejected token, denied CSR, bad files) end it at once.
func (a *Agent) retry(ctx context.Context, once bool, kind bootstrap.Kind, fn func(context.Context) (*rest.Config, error)) (*rest.Config, error) {
	for failures := 0; ; {
		rc, err := fn(ctx)
		a.setWaiting(kind, "")
		if err == nil {
			return rc, nil
		}
		if ctx.Err() != nil {
			return nil, a.gaveUp(ctx, kind, err)
		}
		if once && !bootstrap.IsTransient(err) {
			return nil, err
		}
		failures++
		delay := a.backoff.Delay(failures, a.rand())
		a.log.Warn("attempt failed, retrying", zap.String("certificate", string(kind)), zap.Error(err), zap.Duration("retry_in", delay), zap.Int("failures", failures))
		select {
		case <-ctx.Done():
			return nil, a.gaveUp(ctx, kind, err)
		case <-a.clock.After(delay):
		}
	}
}

func (a *Agent) gaveUp(ctx context.Context, kind bootstrap.Kind, last error) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	if name := a.waitingFor(kind); name != "" && kind == bootstrap.Serving {
		return fmt.Errorf("gave up after %s: the serving CSR %s is still waiting for approval (kubectl certificate approve %s); run again to keep waiting for the same request", a.cfg.Timeout.Duration, name, name)
	}
	return fmt.Errorf("gave up after %s: %w", a.cfg.Timeout.Duration, last)
}
