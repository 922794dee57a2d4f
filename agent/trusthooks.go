package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/certagent/certagent/internal/atomicfile"
)

// The postTrust hooks run after a trust file changed (a kubelet before 1.36
// reads kubelet.conf's CA only at start: `systemctl try-restart kubelet`).
// A marker, written before the file and removed after the hooks ran,
// carries the promise across a crash, as the postRenew hooks' does.

// trustHooksDuePath is the marker: it lists the changed files, one a line.
func trustHooksDuePath(certDir string) string { return filepath.Join(certDir, ".trust-hooks-due") }

// markTrustHooksDue adds path to the files the postTrust hooks are due for.
func (a *Agent) markTrustHooksDue(path string) error {
	cfg := a.Config()
	if len(cfg.Hooks.PostTrust) == 0 {
		return nil
	}
	marker := trustHooksDuePath(cfg.CertDir)
	due := dueTrustFiles(marker)
	for _, p := range due {
		if p == path {
			return nil
		}
	}
	return atomicfile.WriteFile(marker, []byte(strings.Join(append(due, path), "\n")+"\n"), 0o600)
}

func dueTrustFiles(marker string) []string {
	data, err := os.ReadFile(marker)
	if err != nil {
		return nil
	}
	return strings.Fields(string(data))
}

// runDueTrustHooks runs the postTrust hooks if a trust file changed since
// they last ran, then clears the marker. Their environment carries
// CERTAGENT_TRUST_FILES (the files that changed, space-separated) and
// CERTAGENT_NODE_NAME.
func (a *Agent) runDueTrustHooks(ctx context.Context) {
	cfg := a.Config()
	marker := trustHooksDuePath(cfg.CertDir)
	due := dueTrustFiles(marker)
	if len(due) == 0 {
		return
	}
	env := []string{"CERTAGENT_TRUST_FILES=" + strings.Join(due, " "), "CERTAGENT_NODE_NAME=" + cfg.NodeName}
	a.runHooks(ctx, "post-trust", cfg.Hooks.PostTrust, "", env, zap.Strings("trust_files", due))
	if ctx.Err() != nil {
		return
	}
	if err := os.Remove(marker); err != nil && !errors.Is(err, os.ErrNotExist) {
		a.log.Warn("clearing the trust hooks marker", zap.String("path", marker), zap.Error(err))
	}
}
