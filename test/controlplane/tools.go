package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// EnsureKubectl builds kubectl (test/tools/kubectl, the version its go.mod
// pins) into the cache once, as EnsureBinaries does for the control plane,
// and returns its path. The suites run it where the docs tell an operator
// to run kubectl.
func EnsureKubectl(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	return ensureTool(ctx, "kubectl", ".", "about a minute", nil, logf)
}

// EnsureKubelet builds the kubelet of the control plane's version into the
// cache once and returns its path: k8s.io/kubernetes/cmd/kubelet at the
// version test/tools/kubelet pins (Newest's), or with CERTAGENT_K8S naming
// another minor the one test/tools/kubelet-<minor> pins (v1.30, the oldest;
// a minor without such a module is an error, not the newest kubelet against
// an older control plane).
func EnsureKubelet(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	name := "kubelet"
	if minor := os.Getenv("CERTAGENT_K8S"); minor != "" && minor != Newest {
		name += "-" + minor
	}
	return ensureTool(ctx, name, "k8s.io/kubernetes/cmd/kubelet", "about 5 minutes", nil, logf)
}

// EnsureKubeadm builds kubeadm (k8s.io/kubernetes/cmd/kubeadm at the version
// test/tools/kubeadm pins, the control plane's) into the cache once and
// returns its path. It is built static (CGO_ENABLED=0: it runs inside the
// node suite's Debian root as well as on the host) and with the version
// stamped in as Kubernetes' own build does (hack/lib/version.sh): without it
// kubeadm calls itself v0.0.0-master and its version-skew checks refuse the
// cluster.
func EnsureKubeadm(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	modDir, err := testModuleDir()
	if err != nil {
		return "", err
	}
	version, err := kubernetesVersion(filepath.Join(modDir, "tools", "kubeadm"))
	if err != nil {
		return "", err
	}
	major, minor, ok := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	if !ok {
		return "", fmt.Errorf("kubeadm: k8s.io/kubernetes version %q is not vMAJOR.MINOR.PATCH", version)
	}
	minor, _, _ = strings.Cut(minor, ".")
	const pkg = "k8s.io/component-base/version"
	ldflags := fmt.Sprintf("-X %[1]s.gitVersion=%[2]s -X %[1]s.gitMajor=%[3]s -X %[1]s.gitMinor=%[4]s -X %[1]s.gitTreeState=clean",
		pkg, version, major, minor)
	return ensureTool(ctx, "kubeadm", "k8s.io/kubernetes/cmd/kubeadm", "about 5 minutes",
		&toolBuild{ldflags: ldflags, static: true}, logf)
}

// toolBuild are a tool's build settings beyond the default.
type toolBuild struct {
	ldflags string // go build -ldflags
	static  bool   // CGO_ENABLED=0
}

func (b *toolBuild) flags() []string {
	if b == nil || b.ldflags == "" {
		return nil
	}
	return []string{"-ldflags", b.ldflags}
}

func (b *toolBuild) env() []string {
	if b == nil || !b.static {
		return nil
	}
	return []string{"CGO_ENABLED=0"}
}

// ensureTool builds the main package pkg (a path, or "." for the module's
// own) of the module test/tools/<name> into
// <cache>/<name>-<hash>/<name> once and returns the binary's path. The hash
// covers the tool's go.sum, `go env GOVERSION GOOS GOARCH` and the build
// settings b (nil: the defaults); the build holds a flock and writes to a
// temporary name then renames (goBuild), so concurrent callers build once
// and an interrupted build leaves nothing.
func ensureTool(ctx context.Context, name, pkg, takes string, b *toolBuild, logf func(format string, args ...any)) (string, error) {
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
	if b != nil {
		fmt.Fprintf(h, "ldflags=%q static=%t\n", b.ldflags, b.static)
	}
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
		if err := goBuild(ctx, toolDir, dir, map[string]string{pkg: name}, b.env(), b.flags()...); err != nil {
			return "", fmt.Errorf("build %s: %w", name, err)
		}
		logf("built %s in %s", name, time.Since(start).Round(time.Second))
	}
	return bin, nil
}
