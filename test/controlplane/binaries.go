package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Binaries are the paths of the built control-plane commands, and of
// loadercheck: the kubelet's certificate loaders of the same version.
type Binaries struct {
	Etcd, APIServer, ControllerManager, LoaderCheck string
	// Version is the Kubernetes version they were built from (v1.37.2).
	Version string
}

// Newest is the Kubernetes minor the suites run against unless
// CERTAGENT_K8S names another; each supported minor has a module under
// test/k8s (written by test/k8s/gen.sh).
const Newest = "v1.37"

// testModulePath is the module path of the test module that pins the
// control-plane dependencies.
const testModulePath = "github.com/certagent/certagent/test"

// cacheSchema is mixed into the cache key; bump it to invalidate every
// cached build when the way binaries are built changes.
const cacheSchema = "certagent-controlplane-bins-v2"

// EnsureBinaries builds etcd, kube-apiserver, kube-controller-manager and
// loadercheck of the Kubernetes minor in $CERTAGENT_K8S (default Newest, a
// directory under test/k8s) into a cache directory once and reuses them
// afterwards.
//
// The cache directory is $CERTAGENT_TEST_CACHE if set, else
// $XDG_CACHE_HOME/certagent-test or ~/.cache/certagent-test. Binaries live in
// a subdirectory keyed by a short hash of the version module's go.sum, the etcd
// tool's go.sum and `go env GOVERSION GOOS GOARCH`, so a dependency or
// toolchain change builds afresh. Builds use `go build -trimpath`, write to a
// temporary name and rename, so an interrupted build never leaves a partial
// binary, and hold an exclusive flock on a lock file so that concurrent
// callers (parallel test packages) build only once.
//
// logf, which may be nil, reports progress.
func EnsureBinaries(ctx context.Context, logf func(format string, args ...any)) (Binaries, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	modDir, err := testModuleDir()
	if err != nil {
		return Binaries{}, err
	}
	etcdDir := filepath.Join(modDir, "tools", "etcd")
	minor := os.Getenv("CERTAGENT_K8S")
	if minor == "" {
		minor = Newest
	}
	k8sDir := filepath.Join(modDir, "k8s", minor)
	version, err := kubernetesVersion(k8sDir)
	if err != nil {
		return Binaries{}, fmt.Errorf("CERTAGENT_K8S=%s: %w (the minors are the directories of test/k8s)", minor, err)
	}

	key, err := cacheKey(ctx, k8sDir, etcdDir)
	if err != nil {
		return Binaries{}, err
	}
	root, err := cacheRoot()
	if err != nil {
		return Binaries{}, err
	}
	dir := filepath.Join(root, key)
	bins := Binaries{
		Etcd:              filepath.Join(dir, "etcd"),
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		LoaderCheck:       filepath.Join(dir, "loadercheck"),
		Version:           version,
	}
	if bins.allExist() {
		return bins, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("create binary cache dir: %w", err)
	}

	unlock, err := lockFile(ctx, filepath.Join(dir, ".lock"), logf)
	if err != nil {
		return Binaries{}, err
	}
	defer unlock()

	// Another caller may have finished the build while we waited for the lock.
	if !exists(bins.Etcd) {
		logf("building etcd into %s (first run only, about 30 seconds)...", dir)
		start := time.Now()
		if err := goBuild(ctx, etcdDir, dir, map[string]string{".": "etcd"}, nil); err != nil {
			return Binaries{}, fmt.Errorf("build etcd: %w", err)
		}
		logf("built etcd in %s", time.Since(start).Round(time.Second))
	}
	if !exists(bins.APIServer) || !exists(bins.ControllerManager) || !exists(bins.LoaderCheck) {
		logf("building kube-apiserver, kube-controller-manager and loadercheck %s into %s (first run only, about 5 minutes)...", version, dir)
		start := time.Now()
		if err := goBuild(ctx, k8sDir, dir, map[string]string{
			"k8s.io/kubernetes/cmd/kube-apiserver":          "kube-apiserver",
			"k8s.io/kubernetes/cmd/kube-controller-manager": "kube-controller-manager",
		}, nil); err != nil {
			return Binaries{}, fmt.Errorf("build kube-apiserver and kube-controller-manager %s: %w", version, err)
		}
		if err := goBuild(ctx, k8sDir, dir, map[string]string{".": "loadercheck"}, nil); err != nil {
			return Binaries{}, fmt.Errorf("build loadercheck %s: %w", version, err)
		}
		logf("built kube-apiserver and kube-controller-manager %s in %s", version, time.Since(start).Round(time.Second))
	}
	if !bins.allExist() {
		return Binaries{}, fmt.Errorf("binaries missing from %s after build", dir)
	}
	return bins, nil
}

func (b Binaries) allExist() bool {
	return exists(b.Etcd) && exists(b.APIServer) && exists(b.ControllerManager) && exists(b.LoaderCheck)
}

// kubernetesVersion reads the k8s.io/kubernetes version a test/k8s module requires.
func kubernetesVersion(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == "k8s.io/kubernetes" {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("%s/go.mod does not require k8s.io/kubernetes", dir)
}

func exists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// testModuleDir returns the directory of the test module: the parent of the
// directory holding this source file. When the source path is not absolute
// (a -trimpath build of the test), it falls back to the module of the current
// directory if that is the test module.
func testModuleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if ok && filepath.IsAbs(file) {
		dir := filepath.Dir(filepath.Dir(file))
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("locate test module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("locate test module: source path %q is not absolute and reading %q: %w", file, gomod, err)
	}
	if !bytes.Contains(data, []byte("module "+testModulePath+"\n")) {
		return "", fmt.Errorf("locate test module: source path %q is not absolute and %s is not module %s", file, gomod, testModulePath)
	}
	return filepath.Dir(gomod), nil
}

// cacheRoot returns the directory under which cached builds are kept.
func cacheRoot() (string, error) {
	if d := os.Getenv("CERTAGENT_TEST_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "certagent-test"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find cache dir (set CERTAGENT_TEST_CACHE): %w", err)
	}
	return filepath.Join(home, ".cache", "certagent-test"), nil
}

// cacheKey hashes everything that determines the built binaries.
func cacheKey(ctx context.Context, modDir, etcdDir string) (string, error) {
	h := sha256.New()
	h.Write([]byte(cacheSchema + "\n"))
	for _, f := range []string{filepath.Join(modDir, "go.sum"), filepath.Join(etcdDir, "go.sum")} {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("compute binary cache key: %w", err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(filepath.Dir(f)), len(data))
		h.Write(data)
	}
	cmd := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOOS", "GOARCH")
	cmd.Dir = modDir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("compute binary cache key: go env GOVERSION: %w", err)
	}
	h.Write(out)
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel
// the wait. The returned function releases the lock.
func lockFile(ctx context.Context, path string, logf func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	announced := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !announced {
			logf("waiting for another process building control-plane binaries (lock %s)...", path)
			announced = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("wait for build lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// goBuild runs `go build -trimpath [flags]` in dir for each package in pkgs
// (package path -> binary name), all in one invocation, with env added to the
// environment, into a temporary directory inside outDir, then renames each
// binary into outDir.
func goBuild(ctx context.Context, dir, outDir string, pkgs map[string]string, env []string, flags ...string) error {
	tmp, err := os.MkdirTemp(outDir, ".build-")
	if err != nil {
		return fmt.Errorf("create temp build dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	args := append([]string{"build", "-trimpath"}, flags...)
	var out string
	if len(pkgs) == 1 {
		for _, name := range pkgs {
			out = filepath.Join(tmp, name)
		}
	} else {
		// With several packages, -o names a directory and each binary
		// takes its package's base name.
		out = tmp + string(filepath.Separator)
	}
	args = append(args, "-o", out)
	for pkg := range pkgs {
		args = append(args, pkg)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// The test module and the etcd tool are standalone modules; a go.work
	// file further up must not change what gets built.
	cmd.Env = append(append(os.Environ(), "GOWORK=off"), env...)
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), dir, err, tail(output, 40))
	}
	for _, name := range pkgs {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(outDir, name)); err != nil {
			return fmt.Errorf("install %s: %w", name, err)
		}
	}
	return nil
}
