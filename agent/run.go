package agent

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/bootstrap"
)

// noCredentialsPoll is how often the agent looks again for credentials when
// it has neither a kubelet.conf nor a bootstrap kubeconfig.
const noCredentialsPoll = 5 * time.Second

// Run keeps both certificates valid until ctx ends: it obtains what is
// missing, then sleeps until the next renewal deadline. It returns nil when
// ctx is cancelled; failures are retried with back-off, never fatal.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.b.Recover(); err != nil {
		a.log.Warn("cleaning up after an earlier crash", zap.Error(err))
	}
	for ctx.Err() == nil {
		rc, err := a.daemonRetry(ctx, bootstrap.Client, a.ensureClient)
		if err != nil {
			break
		}
		if a.cfg.ServingEnabled() {
			if _, err := a.daemonRetry(ctx, bootstrap.Serving, func(ctx context.Context) (*rest.Config, error) {
				return rc, a.ensureServing(ctx, rc)
			}); err != nil {
				break
			}
		}
		next := a.nextDeadline()
		a.log.Info("certificates valid", zap.Time("next_renewal", next))
		select {
		case <-ctx.Done():
		case <-a.clock.After(next.Sub(a.clock.Now())):
		}
	}
	a.log.Info("stopping")
	return nil
}

// daemonRetry is retry for the daemon, which never gives up: with no
// credentials at all it waits for a bootstrap kubeconfig to appear.
func (a *Agent) daemonRetry(ctx context.Context, kind bootstrap.Kind, fn func(context.Context) (*rest.Config, error)) (*rest.Config, error) {
	for {
		rc, err := fn(ctx)
		if err == nil || ctx.Err() != nil {
			return rc, ctx.Err()
		}
		if !errors.Is(err, bootstrap.ErrNoCredentials) {
			return a.retry(ctx, false, kind, fn)
		}
		a.log.Info("waiting for credentials", zap.Error(err))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-a.clock.After(noCredentialsPoll):
		}
	}
}

// nextDeadline is the earliest renewal deadline of the stored certificates.
func (a *Agent) nextDeadline() time.Time {
	next := a.clock.Now().Add(time.Hour)
	kinds := []bootstrap.Kind{bootstrap.Client}
	if a.cfg.ServingEnabled() {
		kinds = append(kinds, bootstrap.Serving)
	}
	for _, k := range kinds {
		pair, err := bootstrap.LoadCurrent(a.cfg.CertDir, k)
		if err != nil {
			continue
		}
		if d := a.due(pair.Leaf); d != nil && d.Before(next) {
			next = *d
		}
	}
	return next
}
