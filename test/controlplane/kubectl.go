package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// EnsureKubectl builds kubectl (test/tools/kubectl, the version its go.mod
// pins) into the cache once, as EnsureBinaries does for the control plane,
// and returns its path. The suites run it where the docs tell an operator
// to run kubectl.
func EnsureKubectl(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	modDir, err := testModuleDir()
	if err != nil {
		return "", err
	}
	toolDir := filepath.Join(modDir, "tools", "kubectl")
	sum, err := os.ReadFile(filepath.Join(toolDir, "go.sum"))
	if err != nil {
		return "", fmt.Errorf("kubectl cache key: %w", err)
	}
	env, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH").Output()
	if err != nil {
		return "", fmt.Errorf("kubectl cache key: go env: %w", err)
	}
	h := sha256.New()
	h.Write(sum)
	h.Write(env)
	root, err := cacheRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "kubectl-"+hex.EncodeToString(h.Sum(nil))[:12])
	bin := filepath.Join(dir, "kubectl")
	if exists(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create kubectl cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"), logf)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !exists(bin) {
		logf("building kubectl into %s (first run only, about a minute)...", dir)
		start := time.Now()
		if err := goBuild(ctx, toolDir, dir, map[string]string{".": "kubectl"}); err != nil {
			return "", fmt.Errorf("build kubectl: %w", err)
		}
		logf("built kubectl in %s", time.Since(start).Round(time.Second))
	}
	return bin, nil
}
