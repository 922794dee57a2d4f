package approver

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// applyManifests applies the shipped Namespace, TPMEnrollment CRD and
// approver RBAC as an operator would, and waits for the CRD to be served
// (the approver asks at start whether TPMEnrollments are).
func applyManifests(ctx context.Context, dir string) error {
	for _, f := range []string{"00-namespace.yaml", "10-crd.yaml", "approver/20-rbac.yaml"} {
		cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", cp.AdminKubeconfig, "apply", "--server-side", "-f", filepath.Join(dir, f))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl apply -f %s: %w\n%s", f, err, out)
		}
	}
	cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", cp.AdminKubeconfig, "wait", "--for=condition=Established",
		"--timeout=60s", "crd/tpmenrollments.attestation.certagent.io")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("waiting for the TPMEnrollment CRD: %w\n%s", err, out)
	}
	return nil
}
