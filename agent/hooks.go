package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/internal/atomicfile"
)

const defaultHookTimeout = 30 * time.Second

// Hooks run once a step has left its certificate on disk: for the client
// certificate, after kubelet.conf references it and the API server accepted
// it. A marker file, written just before a certificate is stored and removed
// after the hooks ran, carries that promise across a crash: hooks that a
// crash kept from running run after the next successful step.

// hooksDuePath is the marker for kind in certDir.
func hooksDuePath(certDir string, kind bootstrap.Kind) string {
	return filepath.Join(certDir, "."+kind.FilePrefix()+"-hooks-due")
}

// markHooksDue records that kind's hooks must run after the next successful step.
func markHooksDue(certDir string, kind bootstrap.Kind) error {
	return atomicfile.WriteFile(hooksDuePath(certDir, kind), nil, 0o600)
}

// runDueHooks runs the postRenew hooks for kind if a certificate was stored
// since they last ran, then clears the marker. A failing hook is logged and
// counted, never fatal. ctx is the root context: SIGTERM kills a running
// hook. The hook's environment carries CERTAGENT_CERT_KIND (client or
// server), CERTAGENT_CERT_FILE (the -current.pem path), CERTAGENT_NODE_NAME
// and CERTAGENT_NOT_AFTER (RFC 3339).
func (a *Agent) runDueHooks(ctx context.Context, kind bootstrap.Kind, leaf *x509.Certificate) {
	cfg := a.Config()
	marker := hooksDuePath(cfg.CertDir, kind)
	if _, err := os.Stat(marker); err != nil {
		return
	}
	path := bootstrap.CurrentPath(cfg.CertDir, kind)
	var notAfter time.Time
	if leaf != nil {
		notAfter = leaf.NotAfter
	}
	env := []string{
		"CERTAGENT_CERT_KIND=" + string(kind),
		"CERTAGENT_CERT_FILE=" + path,
		"CERTAGENT_NODE_NAME=" + cfg.NodeName,
		"CERTAGENT_NOT_AFTER=" + notAfter.UTC().Format(time.RFC3339),
	}
	failed := a.runHooks(ctx, "post-renew", cfg.Hooks.PostRenew, string(kind), env, zap.String("certificate", string(kind)))
	a.certs.Update(kind, func(s *observe.Cert) { s.HookErrors += uint64(failed) })
	if ctx.Err() != nil {
		return
	}
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("clearing the hooks marker", zap.String("path", marker), zap.Error(err))
	}
}

// runHooks runs hooks (what they are, for the log) one after the other with
// env, until ctx ends, and returns how many failed; a hook whose kinds leave
// out the certificate kind ("" for none) does not run. A failing hook is
// logged, never fatal.
func (a *Agent) runHooks(ctx context.Context, what string, hooks []config.Hook, kind string, env []string, fields ...zap.Field) int {
	failed := 0
	for i, h := range hooks {
		if !h.RunsFor(kind) {
			continue
		}
		if ctx.Err() != nil {
			return failed // stopping: the marker stays, the hooks run after the restart
		}
		timeout := h.Timeout.Duration
		if timeout == 0 {
			timeout = defaultHookTimeout
		}
		hctx, cancel := context.WithTimeout(ctx, timeout)
		start := a.clock.Now()
		out, err := a.opts.RunHook(hctx, h, env)
		if err != nil && hctx.Err() != nil {
			err = hctx.Err()
		}
		cancel()
		log := a.log.With(append(fields, zap.Int("hook", i), zap.Strings("command", h.Command),
			zap.Duration("took", a.clock.Since(start)), zap.ByteString("output", truncate(out, 2048)))...)
		if err != nil {
			failed++
			log.Warn(what+" hook failed", zap.Error(err))
			continue
		}
		log.Info(what + " hook ran")
	}
	return failed
}

// execHook runs h's command without a shell.
func execHook(ctx context.Context, h config.Hook, env []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = time.Second
	return cmd.CombinedOutput()
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
