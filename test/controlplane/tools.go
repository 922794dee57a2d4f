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
	return ensureTool(ctx, "kubectl", ".", "about a minute", logf)
}

// EnsureKubelet builds the kubelet (k8s.io/kubernetes/cmd/kubelet at the
// version test/tools/kubelet pins, the control plane's) into the cache once
// and returns its path.
func EnsureKubelet(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return ensureTool(ctx, "kubelet", "k8s.io/kubernetes/cmd/kubelet", "about 5 minutes", logf)
}

// ensureTool builds the main package pkg (a path, or "." for the module's
// own) of the module test/tools/<name> into
// <cache>/<name>-<hash>/<name> once and returns the binary's path. The hash
// covers the tool's go.sum and `go env GOVERSION GOOS GOARCH`; the build
// holds a flock and writes to a temporary name then renames (goBuild), so
// concurrent callers build once and an interrupted build leaves nothing.
func ensureTool(ctx context.Context, name, pkg, takes string, logf func(format string, args ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	modDir, err := testModuleDir()
	if err != nil {
		return "", err
	}
	toolDir := filepath.Join(modDir, "tools", name)
	sum, err := os.ReadFile(filepath.Join(toolDir, "go.sum"))
	if err != nil {
		return "", fmt.Errorf("%s cache key: %w", name, err)
	}
	env, err := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH").Output()
	if err != nil {
		return "", fmt.Errorf("%s cache key: go env: %w", name, err)
	}
	h := sha256.New()
	h.Write(sum)
	h.Write(env)
	root, err := cacheRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, name+"-"+hex.EncodeToString(h.Sum(nil))[:12])
	bin := filepath.Join(dir, name)
	if exists(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s cache dir: %w", name, err)
	}
	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"), logf)
	if err != nil {
		return "", err
	}
	defer unlock()
	if !exists(bin) {
		logf("building %s into %s (first run only, %s)...", name, dir, takes)
		start := time.Now()
		if err := goBuild(ctx, toolDir, dir, map[string]string{pkg: name}); err != nil {
			return "", fmt.Errorf("build %s: %w", name, err)
		}
		logf("built %s in %s", name, time.Since(start).Round(time.Second))
	}
	return bin, nil
}
