package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
)

// RunOnce obtains whatever is missing or due (everything with force) and
// returns; transient failures are retried with back-off until the configured
// timeout, the others end it at once, a fault of the node itself (a full or
// read-only disk) too: whoever runs a one-shot waits for its answer, and the
// daemon is what retries those. It must hold the certificate
// directory's lock (OneShot takes it).
func (a *Agent) RunOnce(ctx context.Context, force bool) error {
	cfg := a.Config()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout.Duration)
	defer cancel()
	if err := bootstrap.EnsureCertDir(cfg.CertDir); err != nil {
		return err
	}
	if err := a.bootstrapper().Recover(); err != nil {
		return err
	}
	kinds := []bootstrap.Kind{bootstrap.Client}
	if cfg.ServingEnabled() {
		kinds = append(kinds, bootstrap.Serving)
	}
	for _, kind := range kinds {
		t := task{a: a, kind: kind, ctx: ctx}
		res, err := a.retry(ctx, kind, t, force)
		if err == nil && !force && res.Cert.Known() && rotate.WallUntil(a.clock.Now(), a.renewalPolicy().NextRenewal(res.Cert)) <= 0 {
			a.log.Info("renewing: the certificate is due", zap.String("certificate", string(kind)), zap.Time("not_after", res.Cert.NotAfter))
			_, err = a.retry(ctx, kind, t, true)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// retry steps t until it succeeds, fails in a way that is not transient, or ctx ends.
func (a *Agent) retry(ctx context.Context, kind bootstrap.Kind, t rotate.Task, renew bool) (rotate.Result, error) {
	for failures := 0; ; {
		res, err := t.Step(ctx, renew)
		if err == nil {
			return res, nil
		}
		if ctx.Err() != nil {
			return res, a.gaveUp(ctx, kind, err)
		}
		if classify(err) != rotate.Transient {
			return res, err
		}
		if res.Stored {
			renew = false // stored; what failed after it (the proof) is retried alone
		}
		failures++
		delay := rotate.DefaultBackoff.After(failures, bootstrap.RetryAfter(err), a.rand())
		a.log.Warn("attempt failed, retrying", zap.String("certificate", string(kind)), zap.Error(err), zap.Duration("retry_in", delay), zap.Int("failures", failures))
		select {
		case <-ctx.Done():
			return res, a.gaveUp(ctx, kind, err)
		case <-a.clock.After(delay):
		}
	}
}

func (a *Agent) gaveUp(ctx context.Context, kind bootstrap.Kind, last error) error {
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return ctx.Err()
	}
	timeout := a.Config().Timeout.Duration
	name := a.certs.WaitingFor(kind)
	if name != "" && kind == bootstrap.Serving {
		return fmt.Errorf("gave up after %s: the serving CSR %s is still waiting for approval (kubectl certificate approve %s); run again to keep waiting for the same request", timeout, name, name)
	}
	return fmt.Errorf("gave up after %s: %w", timeout, last)
}

// OneShot is `run --once` and `renew`: do the work under the certificate
// directory's lock, or, while a daemon holds it, ask the daemon to do it and
// report what it did; while another one-shot holds it, wait for it.
func (a *Agent) OneShot(ctx context.Context, force bool, out io.Writer) error {
	cfg := a.Config()
	if err := bootstrap.EnsureCertDir(cfg.CertDir); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout.Duration)
	defer cancel()
	for {
		lock, err := tryLock(cfg.CertDir)
		if err == nil {
			defer lock.Release()
			return a.RunOnce(ctx, force)
		}
		if !errors.Is(err, errLocked) {
			return err
		}
		res, derr := askDaemon(ctx, cfg.CertDir, controlRequest{Force: force})
		if derr == nil {
			fmt.Fprintln(out, "the running certagent daemon did the work:")
			return reportSteps(out, res)
		}
		if !errors.Is(derr, errNoDaemon) {
			return derr
		}
		// Another one-shot (or a daemon without its socket) holds the lock: wait our turn.
		lock, err = waitLock(ctx, cfg.CertDir, 200*time.Millisecond, a.clock.After, func(err error) {
			a.log.Info("waiting for the other certagent to finish", zap.Error(err))
		})
		if err != nil {
			return err
		}
		lock.Release() // take it again at the top, where a daemon may have appeared meanwhile
	}
}

// reportSteps prints the daemon's outcomes and fails if any failed.
func reportSteps(out io.Writer, res []controlResult) error {
	var failed []string
	for _, r := range res {
		switch {
		case r.Error != "":
			fmt.Fprintf(out, "  %s: failed: %s\n", r.Certificate, r.Error)
			failed = append(failed, r.Certificate)
		case r.Renewed:
			fmt.Fprintf(out, "  %s: renewed, valid until %s\n", r.Certificate, r.NotAfter.UTC().Format(time.RFC3339))
		default:
			fmt.Fprintf(out, "  %s: valid until %s, not due\n", r.Certificate, r.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("the daemon could not renew: %s", strings.Join(failed, ", "))
	}
	return nil
}
