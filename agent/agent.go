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
	// Rand returns uniform numbers in [0, 1) for back-off jitter; default math/rand.
	Rand func() float64
	// Notifier defaults to systemd's (a no-op when not under systemd).
	Notifier Notifier
	// Bootstrap overrides parts of the bootstrap configuration (tests inject clients).
	Bootstrap func(*bootstrap.Config)
}

// Agent keeps the kubelet's certificates in place.
type Agent struct {
	opts     Options
	log      *zap.Logger
	clock    clock.WithTicker
	rand     func() float64
	notifier Notifier

	mu       sync.Mutex
	cfg      Config
	b        *bootstrap.Bootstrapper
	policy   rotate.Policy
	states   map[bootstrap.Kind]*certState
	force    map[bootstrap.Kind]bool // renew at the next step even if not due
	ready    bool                    // READY=1 was sent
	lastLoop time.Time               // the main loop's last turn, for /healthz
	status   string                  // last STATUS= sent
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
	if opts.Notifier == nil {
		opts.Notifier = NewSystemdNotifier(opts.Logger)
	}
	a := &Agent{
		opts: opts, log: opts.Logger, clock: opts.Clock, rand: opts.Rand, notifier: opts.Notifier,
		states: map[bootstrap.Kind]*certState{},
		force:  map[bootstrap.Kind]bool{},
	}
	if err := a.apply(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// apply installs cfg (at start and on reload).
func (a *Agent) apply(cfg Config) error {
	ips, err := cfg.ServingIPs()
	if err != nil {
		return err
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
		Clock:                   a.clock,
		Logger:                  a.log.Named("bootstrap"),
		OnWaiting: func(kind bootstrap.Kind, name string) {
			a.update(kind, func(s *certState) { s.waitingCSR = name; s.attempts++ })
		},
		OnStored: a.stored,
	}
	if a.opts.Bootstrap != nil {
		a.opts.Bootstrap(&bc)
	}
	b, err := bootstrap.New(bc)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.cfg, a.b, a.policy = cfg, b, rotate.Policy{RenewBefore: cfg.Rotation.RenewBefore.Duration}
	a.mu.Unlock()
	return nil
}

func (a *Agent) config() Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

func (a *Agent) bootstrapper() *bootstrap.Bootstrapper {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.b
}

// stored is called by the bootstrapper after a certificate was written.
func (a *Agent) stored(kind bootstrap.Kind, path string, leaf *x509.Certificate) {
	now := a.clock.Now()
	a.update(kind, func(s *certState) { s.lastSuccess, s.waitingCSR, s.lastErr = now, "", nil })
	a.noteCertificate(kind, leaf)
	a.runHooks(kind, path, leaf.NotAfter)
}

// deadline is when leaf is renewed; the jitter comes from its serial so the
// deadline is stable across restarts and `certagent status` can show it.
func (a *Agent) deadline(leaf *x509.Certificate) time.Time {
	return a.policy.Deadline(leaf.NotBefore, leaf.NotAfter, rotate.JitterFor(leaf.SerialNumber.Bytes()))
}

// takeForce consumes a pending forced renewal of kind.
func (a *Agent) takeForce(kind bootstrap.Kind) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.force[kind]
	delete(a.force, kind)
	return f
}

// ForceRenewal makes the next step of each enabled certificate renew it.
func (a *Agent) ForceRenewal() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.force[bootstrap.Client] = true
	if a.cfg.ServingEnabled() {
		a.force[bootstrap.Serving] = true
	}
}

// stepClient makes sure the client certificate is in place and not due,
// bootstrapping or renewing as needed, and returns the node's credentials.
func (a *Agent) stepClient(ctx context.Context) (*rest.Config, error) {
	b := a.bootstrapper()
	rc, leaf, err := b.ValidClient()
	if err != nil { // missing or expired: bootstrap
		if rc, err = b.Bootstrap(ctx, err); err != nil {
			return nil, err
		}
		if leaf, err = bootstrap.ClientCertificate(rc); err != nil {
			return nil, err
		}
		a.noteCertificate(bootstrap.Client, leaf)
		return rc, nil
	}
	a.noteCertificate(bootstrap.Client, leaf)
	force := a.takeForce(bootstrap.Client)
	if !force && a.clock.Now().Before(a.deadline(leaf)) {
		b.RemoveBootstrapIfProven(ctx, rc) // no request unless a bootstrap kubeconfig lies around
		return rc, nil
	}
	a.log.Info("renewing the client certificate", zap.Time("not_after", leaf.NotAfter), zap.Bool("forced", force))
	if err := b.RenewClient(ctx, rc); err != nil {
		if force {
			a.restoreForce(bootstrap.Client)
		}
		return nil, err
	}
	return rc, nil
}

// stepServing makes sure the serving certificate is in place, covers the
// wanted names and is not due; otherwise it requests one with the node's
// identity.
func (a *Agent) stepServing(ctx context.Context) error {
	b := a.bootstrapper()
	rc, _, err := b.ValidClient()
	if err != nil {
		return errNeedClient
	}
	force := a.takeForce(bootstrap.Serving)
	if pair, err := bootstrap.LoadCurrent(a.config().CertDir, bootstrap.Serving); err == nil {
		a.noteCertificate(bootstrap.Serving, pair.Leaf)
		due := !a.clock.Now().Before(a.deadline(pair.Leaf))
		if !force && !due && b.ServingOK(pair.Leaf) {
			return nil
		}
		if force || due {
			a.log.Info("renewing the serving certificate", zap.Time("not_after", pair.Leaf.NotAfter), zap.Bool("forced", force))
		}
	}
	if _, err := b.Obtain(ctx, bootstrap.Serving, rc, a.config().Kubeconfig); err != nil {
		if force {
			a.restoreForce(bootstrap.Serving)
		}
		return err
	}
	return nil
}

func (a *Agent) restoreForce(kind bootstrap.Kind) {
	a.mu.Lock()
	a.force[kind] = true
	a.mu.Unlock()
}

// RunOnce obtains whatever is missing or due (or everything, after
// ForceRenewal) and returns; transient failures are retried with back-off
// until the configured timeout, the others end it at once.
func (a *Agent) RunOnce(ctx context.Context) error {
	cfg := a.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout.Duration)
	defer cancel()
	if err := a.bootstrapper().Recover(); err != nil {
		return err
	}
	if err := a.retry(ctx, bootstrap.Client, func(ctx context.Context) error { _, err := a.stepClient(ctx); return err }); err != nil {
		return err
	}
	if !cfg.ServingEnabled() {
		return nil
	}
	return a.retry(ctx, bootstrap.Serving, a.stepServing)
}

// retry calls fn until it succeeds, fails in a way that needs a person, or ctx ends.
func (a *Agent) retry(ctx context.Context, kind bootstrap.Kind, fn func(context.Context) error) error {
	for failures := 0; ; {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return a.gaveUp(ctx, kind, err)
		}
		if !bootstrap.IsTransient(err) {
			return err
		}
		failures++
		delay := rotate.DefaultBackoff.Delay(failures, a.rand())
		a.log.Warn("attempt failed, retrying", zap.String("certificate", string(kind)), zap.Error(err), zap.Duration("retry_in", delay), zap.Int("failures", failures))
		select {
		case <-ctx.Done():
			return a.gaveUp(ctx, kind, err)
		case <-a.clock.After(delay):
		}
	}
}

func (a *Agent) gaveUp(ctx context.Context, kind bootstrap.Kind, last error) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	timeout := a.config().Timeout.Duration
	a.mu.Lock()
	name := a.state(kind).waitingCSR
	a.mu.Unlock()
	if name != "" && kind == bootstrap.Serving {
		return fmt.Errorf("gave up after %s: the serving CSR %s is still waiting for approval (kubectl certificate approve %s); run again to keep waiting for the same request", timeout, name, name)
	}
	return fmt.Errorf("gave up after %s: %w", timeout, last)
}
