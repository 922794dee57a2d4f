// Package clusterside installs and runs the cluster side of TPM attestation
// the way an operator does (docs/attestation.md), against a test control
// plane: the manifests of packaging/cluster, `certagent-cluster init-tls`, a
// service-account kubeconfig with exactly the shipped RBAC, and
// `certagent-cluster serve` as its Deployment runs it, trusting a software
// TPM maker of the test's own. Shared by the attestation and node suites.
package clusterside

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/test/controlplane"
)

const (
	Namespace      = "certagent-system"
	ServiceAccount = "certagent-cluster"
	// SAUser is the service account's user name, the CSRs' requester.
	SAUser = "system:serviceaccount:" + Namespace + ":" + ServiceAccount
)

// Cluster is the cluster side installed on a control plane.
type Cluster struct {
	CP *controlplane.ControlPlane
	// Dir is the scratch directory (the TLS files, kubeconfigs, logs).
	Dir string
	// Bin is certagent-cluster; Kubectl is kubectl; Manifests is packaging/cluster.
	Bin, Kubectl, Manifests string
	// Vendor is the TPM maker the services trust (--manufacturer-roots).
	Vendor *swtpm.CA
	// CA is what init-tls printed: the CA nodes trust the service by.
	CA struct {
		Hash string `json:"caHash"`
		PEM  string `json:"caPEM"`
	}
	// TLSDir holds tls.crt and tls.key as the Deployment mounts them.
	TLSDir string
}

// Install builds or finds certagent-cluster and kubectl, makes the vendor
// CA, applies the Namespace, the CRD and the RBAC, and runs init-tls.
func Install(ctx context.Context, cp *controlplane.ControlPlane, dir string, logf func(string, ...any)) (*Cluster, error) {
	c := &Cluster{CP: cp, Dir: dir, TLSDir: filepath.Join(dir, "tls")}
	var err error
	if c.Bin, err = clusterBinary(ctx, dir); err != nil {
		return nil, fmt.Errorf("building certagent-cluster: %w", err)
	}
	if c.Manifests, err = filepath.Abs(filepath.Join("..", "..", "packaging", "cluster")); err != nil {
		return nil, err
	}
	if c.Vendor, err = swtpm.NewCA(filepath.Join(dir, "vendor-ca"), "vendor"); err != nil {
		return nil, err
	}
	if c.Kubectl, err = controlplane.EnsureKubectl(ctx, logf); err != nil {
		return nil, fmt.Errorf("building kubectl: %w", err)
	}
	for _, f := range []string{"00-namespace.yaml", "10-crd.yaml", "20-rbac.yaml"} {
		if out, err := c.KubectlCmd(ctx, "", "apply", "--server-side", "-f", filepath.Join(c.Manifests, f)); err != nil {
			return nil, fmt.Errorf("kubectl apply --server-side -f %s: %w\n%s", f, err, out)
		}
	}
	if out, err := c.KubectlCmd(ctx, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/tpmenrollments.attestation.certagent.io"); err != nil {
		return nil, fmt.Errorf("waiting for the CRD: %w\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, c.Bin, "init-tls", "--kubeconfig", cp.AdminKubeconfig,
		"--namespace", Namespace, "--san", "127.0.0.1", "-o", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("certagent-cluster init-tls: %w", err)
	}
	if err := json.Unmarshal(out, &c.CA); err != nil {
		return nil, fmt.Errorf("init-tls -o json printed %q: %w", out, err)
	}
	return c, c.mountTLSSecret(ctx)
}

// clusterBinary is $CERTAGENT_CLUSTER_BIN (the Makefile builds it), else a
// build of ../../cmd/certagent-cluster into dir.
func clusterBinary(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("CERTAGENT_CLUSTER_BIN"); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(dir, "certagent-cluster")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/certagent-cluster")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return out, cmd.Run()
}

// KubectlCmd runs kubectl as the cluster admin, stdin from stdin if set.
func (c *Cluster) KubectlCmd(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.CP.AdminKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

// FreeAddr is a free loopback address.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
