// Package e2e runs the built certagent binary against a real kube-apiserver,
// kube-controller-manager and etcd (package controlplane) and checks what it
// leaves on disk with the kubelet's own code.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/kubelettest"
)

var (
	cp           *controlplane.ControlPlane
	certagentBin string
	// cpBins are the control plane's binaries (CERTAGENT_K8S picks the version).
	cpBins controlplane.Binaries
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...) }
	work, err := os.MkdirTemp("", "certagent-e2e-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	if certagentBin, err = kubelettest.BuildCertagent(ctx, work); err != nil {
		logf("building certagent: %v", err)
		return 1
	}
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		logf("building the control plane: %v", err)
		return 1
	}
	cpBins = bins
	start := time.Now()
	cp, err = controlplane.Start(ctx, bins, controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf})
	if err != nil {
		logf("starting the control plane: %v", err)
		return 1
	}
	logf("control plane %s up at %s in %s", bins.Version, cp.URL, time.Since(start).Round(time.Millisecond))
	defer cp.Stop()
	return m.Run()
}
