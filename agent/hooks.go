package agent

import (
	"context"
	"os"
	"os/exec"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
)

const defaultHookTimeout = 30 * time.Second

// runHooks runs the postRenew hooks for a certificate just written. A failing
// hook is logged and counted, never fatal. The hook's environment carries
// CERTAGENT_CERT_KIND (client or server), CERTAGENT_CERT_FILE (the -current.pem
// path), CERTAGENT_NODE_NAME and CERTAGENT_NOT_AFTER (RFC 3339).
func (a *Agent) runHooks(kind bootstrap.Kind, path string, notAfter time.Time) {
	cfg := a.config()
	for i, h := range cfg.Hooks.PostRenew {
		timeout := h.Timeout.Duration
		if timeout == 0 {
			timeout = defaultHookTimeout
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		cmd := exec.CommandContext(ctx, h.Command[0], h.Command[1:]...)
		cmd.Env = append(os.Environ(),
			"CERTAGENT_CERT_KIND="+string(kind),
			"CERTAGENT_CERT_FILE="+path,
			"CERTAGENT_NODE_NAME="+cfg.NodeName,
			"CERTAGENT_NOT_AFTER="+notAfter.UTC().Format(time.RFC3339),
		)
		cmd.WaitDelay = time.Second
		start := a.clock.Now()
		out, err := cmd.CombinedOutput()
		cancel()
		log := a.log.With(zap.Int("hook", i), zap.Strings("command", h.Command), zap.String("certificate", string(kind)),
			zap.Duration("took", a.clock.Since(start)), zap.ByteString("output", truncate(out, 2048)))
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			a.update(kind, func(s *certState) { s.hookErrors++ })
			log.Warn("post-renew hook failed", zap.Error(err))
			continue
		}
		log.Info("post-renew hook ran")
	}
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
