package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

var (
	cp       *controlplane.ControlPlane
	rootfs   string
	deb      string // the package under test (amd64)
	debNewer string // the same code with a higher version, for the upgrade
	rpmPkg   string // the rpm under test (x86_64), and its newer twin
	rpmNewer string
	// failpointBin is certagent built with -tags failpoints, to hang a
	// worker on purpose (the watchdog test).
	failpointBin string
	cacheRoot    string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "node: "+f+"\n", a...) }
	if os.Geteuid() != 0 {
		logf("the node suite boots systemd-nspawn containers and must run as root (make node as root)")
		return 1
	}
	var err error
	if deb, err = oneFile(os.Getenv("CERTAGENT_DEB")); err != nil {
		logf("CERTAGENT_DEB: %v (make node builds it)", err)
		return 1
	}
	if debNewer, err = oneFile(os.Getenv("CERTAGENT_DEB_NEWER")); err != nil {
		logf("CERTAGENT_DEB_NEWER: %v (make node builds it)", err)
		return 1
	}
	if rpmPkg, err = oneFile(os.Getenv("CERTAGENT_RPM")); err != nil {
		logf("CERTAGENT_RPM: %v (make node builds it)", err)
		return 1
	}
	if rpmNewer, err = oneFile(os.Getenv("CERTAGENT_RPM_NEWER")); err != nil {
		logf("CERTAGENT_RPM_NEWER: %v (make node builds it)", err)
		return 1
	}
	if failpointBin, err = oneFile(os.Getenv("CERTAGENT_FAILPOINT_BIN")); err != nil {
		logf("CERTAGENT_FAILPOINT_BIN: %v (make node builds it: certagent with -tags failpoints)", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if cacheRoot = os.Getenv("CERTAGENT_TEST_CACHE"); cacheRoot == "" {
		home, _ := os.UserHomeDir()
		cacheRoot = filepath.Join(home, ".cache", "certagent-test")
	}
	if rootfs, err = ensureRootfs(ctx, cacheRoot, logf); err != nil {
		logf("root file system: %v", err)
		return 1
	}
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		logf("%v", err)
		return 1
	}
	work, err := os.MkdirTemp("", "certagent-node-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	if cp, err = controlplane.Start(ctx, bins, controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf}); err != nil {
		logf("%v", err)
		return 1
	}
	defer cp.Stop()
	return m.Run()
}

func oneFile(glob string) (string, error) {
	if glob == "" {
		return "", fmt.Errorf("not set")
	}
	m, err := filepath.Glob(glob)
	if err != nil || len(m) != 1 {
		return "", fmt.Errorf("%q matches %d files, want 1", glob, len(m))
	}
	return m[0], nil
}

func controlplaneAutoApprove() controlplane.TokenOptions {
	return controlplane.TokenOptions{AutoApprove: true}
}
