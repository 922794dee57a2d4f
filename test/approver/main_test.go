// Package approver runs the kubelet serving CSR approver (the built
// certagent-cluster approve) against a real kube-apiserver,
// kube-controller-manager and etcd, as the service account of
// packaging/cluster/approver with exactly its RBAC, and makes CSRs with
// nodes' own credentials (client certificates of system:node:<name> in
// system:nodes). As root, the API server listens on the address of a bridge
// the suite creates, for nodes in network namespaces (netns_test.go). One
// test runs the real kubelet on containerd (kubelet_test.go, root and
// make e2e-deps).
package approver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/test/clusterside"
	"github.com/certagent/certagent/test/controlplane"
)

const (
	// dnsSuffix is the shared approver's --dns-suffix.
	dnsSuffix = "nodes.example.test"
)

var (
	cp           *controlplane.ControlPlane
	clusterBin   string
	certagentBin string
	kubectlBin   string
	work         string
	// saKubeconfig authenticates as the approver's service account.
	saKubeconfig string
	// shared is the approver the tests share: default mode (refusals left
	// pending).
	shared *clusterside.Approver
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "approver: "+format+"\n", args...) }
	var err error
	if work, err = os.MkdirTemp("", "certagent-approver-"); err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	defer func() { bridge.Down() }()
	if err := setUp(ctx, logf); err != nil {
		logf("%v", err)
		return 1
	}
	defer cp.Stop()
	defer func() { shared.Stop() }()
	code := m.Run()
	if code != 0 {
		logf("the shared approver's log:\n%s", tail(shared.LogText(), 40))
	}
	return code
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// setUp builds or finds the binaries, starts the control plane, applies the
// shipped Namespace and approver RBAC as an operator would, and starts the
// approver as its Deployment runs it, with the service account's token.
func setUp(ctx context.Context, logf func(string, ...any)) error {
	var err error
	if clusterBin, err = binary(ctx, "CERTAGENT_CLUSTER_BIN", "certagent-cluster"); err != nil {
		return fmt.Errorf("building certagent-cluster: %w", err)
	}
	if certagentBin, err = binary(ctx, "CERTAGENT_BIN", "certagent"); err != nil {
		return fmt.Errorf("building certagent: %w", err)
	}
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}
	if kubectlBin, err = controlplane.EnsureKubectl(ctx, logf); err != nil {
		return fmt.Errorf("building kubectl: %w", err)
	}
	opts := controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf}
	if os.Geteuid() == 0 { // the API server on the bridge, for TestTwoNodesInNetworkNamespaces
		if bridge, err = bridgeUp(ctx); err != nil {
			return fmt.Errorf("creating the bridge for network namespaces: %w", err)
		}
		opts.BindAddress = bridge.IP
	}
	if cp, err = controlplane.Start(ctx, bins, opts); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	if saKubeconfig, err = clusterside.InstallApprover(ctx, cp, kubectlBin, work); err != nil {
		return err
	}
	if shared, err = startApprover(ctx, "shared", "--dns-suffix", dnsSuffix); err != nil {
		return err
	}
	logf("control plane at %s, approver log %s", cp.URL, shared.LogPath)
	return nil
}

// binary is $env (the Makefile builds it), else a build of ../../cmd/<name>.
func binary(ctx context.Context, env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(work, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return out, cmd.Run()
}

// startApprover runs certagent-cluster approve as the Deployment does, with
// the service account's kubeconfig, debug logs and extra flags.
func startApprover(ctx context.Context, name string, extra ...string) (*clusterside.Approver, error) {
	return clusterside.StartApprover(ctx, clusterBin, saKubeconfig, work, name, append([]string{"--log-level", "debug"}, extra...)...)
}
