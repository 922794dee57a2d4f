package fleet

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/certagent/certagent/test/clusterside"
	"github.com/certagent/certagent/test/controlplane"
)

// The approvers operators run today (docs/approver.md, "Compared with the
// approvers operators run today") are not served by this machine's Go module
// proxy, so make test cannot build them. Given a binary of either in the
// environment (built by hand from its source), TestServingApprovers runs it
// too, on the same fleet, as a process of its own under a user of its own in
// system:masters (as an operator's install grants it what it needs) and in
// the group the audit log records.
const (
	// envCSRApprover names a binary of postfinance/kubelet-csr-approver.
	envCSRApprover = "FLEET_KUBELET_CSR_APPROVER"
	// envServingCertApprover names a binary of
	// alex1989hu/kubelet-serving-cert-approver.
	envServingCertApprover = "FLEET_KUBELET_SERVING_CERT_APPROVER"
)

// anchorApprovers are the anchors whose binaries the environment names.
func anchorApprovers(c *cluster, dir string) ([]approverUnderTest, error) {
	var out []approverUnderTest
	if bin := os.Getenv(envCSRApprover); bin != "" {
		// DNS resolution bypassed (the fleet's node names are in no DNS), the
		// fleet's addresses as the provider's prefix: its documented setup
		// for nodes whose names do not resolve.
		a, err := anchor(c, dir, "postfinance/kubelet-csr-approver", "ap", "fleet-kubelet-csr-approver", "kubelet-serving cert validated",
			bin, "--bypass-dns-resolution", "--provider-ip-prefixes", "10.232.0.0/16",
			"--metrics-bind-address", "0", "--health-probe-bind-address", clusterside.FreeAddr())
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if bin := os.Getenv(envServingCertApprover); bin != "" {
		// Its ports are fixed (:8080 probes, :9090 metrics).
		a, err := anchor(c, dir, "alex1989hu/kubelet-serving-cert-approver", "ax", "fleet-kubelet-serving-cert-approver",
			"Approved by Kubelet Serving Certificate Approver", bin, "serve")
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// anchor is one anchor approver: bin with args, its kubeconfig in
// $KUBECONFIG, its log in dir.
func anchor(c *cluster, dir, name, prefix, user, reason, bin string, args ...string) (approverUnderTest, error) {
	kubeconfig, err := writeUserKubeconfig(c, dir, user, "system:masters", controlplane.AuditedGroup)
	if err != nil {
		return approverUnderTest{}, err
	}
	start := func() (approverProcess, error) {
		logFile, err := os.Create(filepath.Join(dir, prefix+"-approver.log"))
		if err != nil {
			return nil, err
		}
		defer logFile.Close()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := controlplane.Spawn(cmd); err != nil {
			return nil, fmt.Errorf("starting %s: %w", name, err)
		}
		return adhocProcess{cmd}, nil
	}
	return approverUnderTest{name: name, prefix: prefix, user: user, reason: reason, start: start}, nil
}
