package clusterside

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

// ApproverServiceAccount is the serving CSR approver's service account
// (packaging/cluster/approver/20-rbac.yaml).
const ApproverServiceAccount = "certagent-approver"

// InstallApprover applies the shipped Namespace, the TPMEnrollment CRD and the
// approver's RBAC (packaging/cluster/approver/20-rbac.yaml) with kubectl, as an
// operator does (and waits for the CRD to be served),
// and writes into dir a kubeconfig for its service account: the approver
// then has exactly that RBAC. Shared by the approver and fleet suites.
func InstallApprover(ctx context.Context, cp *controlplane.ControlPlane, kubectl, dir string) (kubeconfig string, err error) {
	manifests, err := filepath.Abs(filepath.Join("..", "..", "packaging", "cluster"))
	if err != nil {
		return "", err
	}
	for _, f := range []string{"00-namespace.yaml", "10-crd.yaml", "approver/20-rbac.yaml"} {
		cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", cp.AdminKubeconfig, "apply", "--server-side", "-f", filepath.Join(manifests, f))
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("kubectl apply -f %s: %w\n%s", f, err, out)
		}
	}
	// The approver asks at start whether TPMEnrollments are served.
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", cp.AdminKubeconfig, "wait", "--for=condition=Established",
		"--timeout=60s", "crd/tpmenrollments.attestation.certagent.io")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("waiting for the TPMEnrollment CRD: %w\n%s", err, out)
	}
	kubeconfig = filepath.Join(dir, "kubeconfig-approver")
	return kubeconfig, cp.ServiceAccountKubeconfig(ctx, Namespace, ApproverServiceAccount, kubeconfig)
}

// ClusterBinary is $CERTAGENT_CLUSTER_BIN (the Makefile builds it), else a
// build of ../../cmd/certagent-cluster into dir.
func ClusterBinary(ctx context.Context, dir string) (string, error) { return clusterBinary(ctx, dir) }

// Approver is one certagent-cluster approve process.
type Approver struct {
	Name, LogPath, Health string
	cmd                   *exec.Cmd
	done                  chan struct{}
}

// StartApprover runs bin (certagent-cluster) approve with kubeconfig and
// extra flags, its log in dir, and waits for /readyz.
func StartApprover(ctx context.Context, bin, kubeconfig, dir, name string, extra ...string) (*Approver, error) {
	a := &Approver{Name: name, LogPath: filepath.Join(dir, "approver-"+name+".log"), Health: FreeAddr(), done: make(chan struct{})}
	logFile, err := os.OpenFile(a.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	a.cmd = exec.Command(bin, append([]string{"approve", "--kubeconfig", kubeconfig, "--health-listen", a.Health}, extra...)...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(a.cmd); err != nil {
		return nil, fmt.Errorf("starting certagent-cluster approve: %w", err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		select {
		case <-a.done:
			return nil, fmt.Errorf("certagent-cluster approve exited: %v\n%s", a.cmd.ProcessState, a.LogText())
		case <-ctx.Done():
			a.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if rsp, err := http.Get("http://" + a.Health + "/readyz"); err == nil {
			rsp.Body.Close()
			if rsp.StatusCode == http.StatusOK {
				return a, nil
			}
		}
	}
	a.Stop()
	return nil, fmt.Errorf("certagent-cluster approve not ready after a minute:\n%s", a.LogText())
}

// PID is the process's id.
func (a *Approver) PID() int { return a.cmd.Process.Pid }

// Stop sends SIGTERM and waits; the exit code (-1 if killed).
func (a *Approver) Stop() int {
	if a == nil || a.cmd == nil {
		return -1
	}
	return terminate(a.cmd, a.done, 20*time.Second)
}

// terminate sends cmd's process SIGTERM and waits grace for done, then
// kills it; the exit code, -1 if it had to be killed.
func terminate(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) int {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return -1
	}
	return cmd.ProcessState.ExitCode()
}

// LogText is the process's log so far.
func (a *Approver) LogText() string {
	data, _ := os.ReadFile(a.LogPath)
	return string(data)
}
