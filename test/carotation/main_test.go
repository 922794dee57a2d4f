// Package carotation rotates the cluster CA of a real control plane, phase
// by phase as an operator does (test/controlplane's AddCA … RemoveOldCA),
// under a node where certagent's daemon, with trust.follow, keeps the files
// of the real kubelet on containerd (test/kubelettest). It has a control
// plane of its own: test/e2e's is shared by many tests and must keep its CA.
package carotation

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/kubelettest"
)

// trustRBAC lets nodes read ClusterTrustBundles, as docs/ca-rotation.md has
// the operator apply it before the first rotation.
const trustRBAC = "../../packaging/cluster/trust/rbac.yaml"

var (
	cp           *controlplane.ControlPlane
	certagentBin string
	kubectlBin   string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "carotation: "+format+"\n", args...) }
	work, err := os.MkdirTemp("", "certagent-carotation-")
	if err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	if err := setUp(ctx, work, logf); err != nil {
		logf("%v", err)
		return 1
	}
	defer cp.Stop()
	return m.Run()
}

// setUp builds certagent, starts the control plane with the published
// serving trust and applies the nodes' ClusterTrustBundle RBAC with kubectl.
func setUp(ctx context.Context, work string, logf func(string, ...any)) error {
	var err error
	if certagentBin, err = kubelettest.BuildCertagent(ctx, work); err != nil {
		return fmt.Errorf("building certagent: %w", err)
	}
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}
	if kubectlBin, err = controlplane.EnsureKubectl(ctx, logf); err != nil {
		return fmt.Errorf("building kubectl: %w", err)
	}
	cp, err = controlplane.Start(ctx, bins, controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf, PublishServingTrust: true})
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	out, err := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", cp.AdminKubeconfig, "apply", "-f", trustRBAC).CombinedOutput()
	if err != nil {
		cp.Stop()
		return fmt.Errorf("kubectl apply -f %s: %w: %s", trustRBAC, err, out)
	}
	logf("control plane %s up at %s, publishing its serving trust", bins.Version, cp.URL)
	return nil
}
