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
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/test/attestsvc"
	"github.com/certagent/certagent/test/controlplane"
)

const (
	namespace      = attestsvc.Namespace
	serviceAccount = attestsvc.ServiceAccount
	// saUser is the service account's user name, the CSRs' requester.
	saUser = attestsvc.SAUser
)

var (
	cp         *controlplane.ControlPlane
	clusterBin string
	kubectlBin string
	// manifests is packaging/cluster.
	manifests string
	// vendor is the TPM maker the service trusts (--manufacturer-roots).
	vendor *swtpm.CA
	// serviceCA is what init-tls printed: the CA nodes trust the service by.
	serviceCA attestsvc.ServiceCA
	// tlsDir holds tls.crt and tls.key as the Deployment mounts them.
	tlsDir string
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
	var err error
	if clusterBin, err = clusterBinary(ctx); err != nil {
		return fmt.Errorf("building certagent-cluster: %w", err)
	}
	if manifests, err = attestsvc.Manifests(); err != nil {
		return err
	}
	if vendor, err = swtpm.NewCA(filepath.Join(work, "vendor-ca"), "vendor"); err != nil {
		return err
	}
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}
	if kubectlBin, err = controlplane.EnsureKubectl(ctx, logf); err != nil {
		return fmt.Errorf("building kubectl: %w", err)
	}
	if cp, err = controlplane.Start(ctx, bins, controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf}); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	if err := install(ctx); err != nil {
		return err
	}
	kubeconfig, err := serviceAccountKubeconfig(ctx, serviceAccount)
	if err != nil {
		return err
	}
	if svc, err = startService(ctx, "shared", kubeconfig, freeAddr(), freeAddr()); err != nil {
		return err
	}
	logf("control plane at %s, attestation service at %s (log %s)", cp.URL, svc.url, svc.logPath)
	return nil
}

// install does the operator's steps of docs/attestation.md: apply the
// Namespace, the CRD and the RBAC, then init-tls (package attestsvc).
func install(ctx context.Context) error {
	tlsDir = filepath.Join(work, "tls")
	var err error
	serviceCA, err = attestsvc.Install(ctx, cp, kubectlBin, clusterBin, manifests, tlsDir)
	return err
}

// clusterBinary is $CERTAGENT_CLUSTER_BIN (the Makefile builds it), else a
// build of ../../cmd/certagent-cluster.
func clusterBinary(ctx context.Context) (string, error) { return attestsvc.ClusterBinary(ctx, work) }

// kubectlCmd runs kubectl as the cluster admin, stdin from stdin if set.
func kubectlCmd(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	return attestsvc.Kubectl(ctx, kubectlBin, cp, stdin, args...)
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
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
