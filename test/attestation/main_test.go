package attestation

// The cluster side of TPM attestation against real parts: the built
// certagent-cluster binary, run as a process with a service-account token
// that has exactly the RBAC of packaging/cluster, against a real
// kube-apiserver, kube-controller-manager and etcd (package controlplane);
// one real software TPM (swtpm) per simulated node, and certagent's node half
// (bootstrap/tpm) driven from the tests.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/test/clusterside"
	"github.com/certagent/certagent/test/controlplane"
)

const (
	namespace      = clusterside.Namespace
	serviceAccount = clusterside.ServiceAccount
	// saUser is the service account's user name, the CSRs' requester.
	saUser = clusterside.SAUser
)

var (
	cp *controlplane.ControlPlane
	// cluster is the cluster side as an operator installs it (package clusterside).
	cluster *clusterside.Cluster
	// manifests is packaging/cluster.
	manifests string
	// vendor is the TPM maker the service trusts (--manufacturer-roots).
	vendor *swtpm.CA
	// serviceCA is what init-tls printed: the CA nodes trust the service by.
	serviceCA struct{ Hash, PEM string }
	// work is the suite's scratch directory.
	work string
	// svc is the service the tests share, with the shipped RBAC.
	svc *service
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "attestation: "+format+"\n", args...) }
	var err error
	if work, err = os.MkdirTemp("", "certagent-attestation-"); err != nil {
		logf("%v", err)
		return 1
	}
	if os.Getenv("ATTESTATION_KEEP_WORK") == "" {
		defer os.RemoveAll(work)
	}
	if err := setUp(ctx, logf); err != nil {
		logf("%v", err)
		return 1
	}
	defer cp.Stop()
	defer svc.stop()
	code := m.Run()
	if code != 0 {
		logf("the shared service's log (ATTESTATION_KEEP_WORK=1 keeps %s):\n%s", work, tailLines(svc.logText(), 40))
	}
	return code
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// setUp builds or finds the binaries, starts the control plane, installs
// what an operator installs (the manifests, init-tls) and starts the service
// as its Deployment would run it.
func setUp(ctx context.Context, logf func(string, ...any)) error {
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}
	if cp, err = controlplane.Start(ctx, bins, controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf}); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	if cluster, err = clusterside.Install(ctx, cp, work, logf); err != nil {
		return err
	}
	manifests, vendor = cluster.Manifests, cluster.Vendor
	serviceCA.Hash, serviceCA.PEM = cluster.CA.Hash, cluster.CA.PEM
	kubeconfig, err := serviceAccountKubeconfig(ctx, serviceAccount)
	if err != nil {
		return err
	}
	if svc, err = startService(ctx, "shared", kubeconfig, freeAddr(), freeAddr()); err != nil {
		return err
	}
	logf("control plane at %s, attestation service at %s (log %s)", cp.URL, svc.URL, svc.LogPath)
	return nil
}

// kubectlCmd runs kubectl as the cluster admin, stdin from stdin if set.
func kubectlCmd(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	return cluster.KubectlCmd(ctx, stdin, args...)
}

// kubectl is kubectlCmd in a test: a failure fails it.
func kubectl(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, err := kubectlCmd(context.Background(), stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// freeAddr is a free loopback address.
func freeAddr() string { return clusterside.FreeAddr() }
