// Package attestsvc sets up the cluster side of TPM attestation on a test
// control plane as an operator does (docs/attestation.md): the manifests of
// packaging/cluster, init-tls, a service-account kubeconfig with the shipped
// RBAC, and `certagent-cluster serve` run as its Deployment runs it. Shared
// by test/attestation and test/fleet.
package attestsvc

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/test/controlplane"
)

const (
	Namespace      = "certagent-system"
	ServiceAccount = "certagent-cluster"
	// SAUser is the service account's user name, the CSRs' requester.
	SAUser = "system:serviceaccount:" + Namespace + ":" + ServiceAccount
)

// ServiceCA is what init-tls prints: the CA nodes trust the service by.
type ServiceCA struct {
	Hash string `json:"caHash"`
	PEM  string `json:"caPEM"`
}

// Manifests is packaging/cluster, from a directory two levels below the
// repository (test/<suite>).
func Manifests() (string, error) {
	return filepath.Abs(filepath.Join("..", "..", "packaging", "cluster"))
}

// ClusterBinary is $CERTAGENT_CLUSTER_BIN (the Makefile builds it), else a
// build of ../../cmd/certagent-cluster into dir.
func ClusterBinary(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("CERTAGENT_CLUSTER_BIN"); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(dir, "certagent-cluster")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/certagent-cluster")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return out, cmd.Run()
}

// Kubectl runs kubectl as cp's admin, stdin from stdin if set.
func Kubectl(ctx context.Context, kubectl string, cp *controlplane.ControlPlane, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", cp.AdminKubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	return cmd.CombinedOutput()
}

// Install does the operator's steps of docs/attestation.md on cp: apply the
// Namespace, the CRD and the RBAC of manifests, then init-tls; it writes the
// TLS Secret init-tls made into tlsDir as the kubelet mounts it into the pod.
func Install(ctx context.Context, cp *controlplane.ControlPlane, kubectl, clusterBin, manifests, tlsDir string) (ServiceCA, error) {
	var ca ServiceCA
	for _, f := range []string{"00-namespace.yaml", "10-crd.yaml", "20-rbac.yaml"} {
		if out, err := Kubectl(ctx, kubectl, cp, "", "apply", "--server-side", "-f", filepath.Join(manifests, f)); err != nil {
			return ca, fmt.Errorf("kubectl apply --server-side -f %s: %w\n%s", f, err, out)
		}
	}
	if out, err := Kubectl(ctx, kubectl, cp, "", "wait", "--for=condition=Established", "--timeout=60s", "crd/tpmenrollments.attestation.certagent.io"); err != nil {
		return ca, fmt.Errorf("waiting for the CRD: %w\n%s", err, out)
	}
	out, err := exec.CommandContext(ctx, clusterBin, "init-tls", "--kubeconfig", cp.AdminKubeconfig,
		"--namespace", Namespace, "--san", "127.0.0.1", "-o", "json").Output()
	if err != nil {
		return ca, fmt.Errorf("certagent-cluster init-tls: %w", err)
	}
	if err := json.Unmarshal(out, &ca); err != nil {
		return ca, fmt.Errorf("init-tls -o json printed %q: %w", out, err)
	}
	return ca, MountTLSSecret(ctx, cp, tlsDir)
}

// MountTLSSecret writes the Secret init-tls made into dir, as the kubelet
// mounts it into the pod.
func MountTLSSecret(ctx context.Context, cp *controlplane.ControlPlane, dir string) error {
	s, err := cp.Admin.CoreV1().Secrets(Namespace).Get(ctx, "certagent-cluster-tls", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the Secret init-tls made: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, k := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, k), s.Data[k], 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ServiceAccountKubeconfig writes into dir a kubeconfig that authenticates
// as the service account sa of the namespace with a TokenRequest token, as
// the pod's projected token would: the service then has exactly that
// account's RBAC.
func ServiceAccountKubeconfig(ctx context.Context, cp *controlplane.ControlPlane, dir, sa string) (string, error) {
	expiry := int64(3600)
	tr, err := cp.Admin.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", Namespace, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["cluster"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: cp.CACertPEM}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["sa"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: sa}
	cfg.CurrentContext = "sa"
	path := filepath.Join(dir, "kubeconfig-"+sa)
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("writing %s: %w", path, err)
	}
	return path, nil
}

// ServeArgs is the command line of `certagent-cluster serve` as the
// Deployment's container runs it (the mounted TLS Secret in tlsDir), with the
// manufacturer-CA policy on for the PEM files roots and intermediates and a
// 2 h cap on lifetimes, then extra.
func ServeArgs(kubeconfig, listen, healthListen, tlsDir, roots, intermediates, logLevel string, extra ...string) []string {
	return append([]string{"serve", "--kubeconfig", kubeconfig, "--listen", listen, "--health-listen", healthListen,
		"--tls-cert-file", filepath.Join(tlsDir, "tls.crt"), "--tls-private-key-file", filepath.Join(tlsDir, "tls.key"),
		"--manufacturer-roots", roots, "--manufacturer-intermediates", intermediates,
		"--max-expiration", "2h", "--log-level", logLevel}, extra...)
}

// WriteVendorPEM writes the maker's root and intermediate into dir as the
// files ServeArgs names.
func WriteVendorPEM(dir string, root, intermediate *x509.Certificate) (roots, intermediates string, err error) {
	roots, intermediates = filepath.Join(dir, "vendor-roots.pem"), filepath.Join(dir, "vendor-intermediates.pem")
	if err = os.WriteFile(roots, PEMCert(root), 0o644); err != nil {
		return
	}
	err = os.WriteFile(intermediates, PEMCert(intermediate), 0o644)
	return
}

// PEMCert encodes c as a PEM CERTIFICATE block.
func PEMCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// Process is one certagent-cluster serve process.
type Process struct {
	Bin, LogPath string
	Args         []string
	Health       string // http://host:port of --health-listen
	Cmd          *exec.Cmd
	Done         chan struct{}
}

// Start runs the command, its output appended to LogPath.
func (p *Process) Start() error {
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	p.Cmd = exec.Command(p.Bin, p.Args...)
	p.Cmd.Stdout, p.Cmd.Stderr = logFile, logFile
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(p.Cmd); err != nil {
		return fmt.Errorf("starting certagent-cluster: %w", err)
	}
	p.Done = make(chan struct{})
	go func() { _ = p.Cmd.Wait(); close(p.Done) }()
	return nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

// WaitReady polls /readyz until it answers 200.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("certagent-cluster exited: %v\n%s", p.Cmd.ProcessState, p.LogText())
		}
		if rsp, err := http.Get(p.Health + "/readyz"); err == nil {
			rsp.Body.Close()
			if rsp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("certagent-cluster not ready after %v:\n%s", timeout, p.LogText())
}

// Stop sends SIGTERM and returns the exit code (-1 if it had to be killed).
func (p *Process) Stop() int {
	if p == nil || p.Cmd == nil {
		return -1
	}
	if !p.Exited() {
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.Done:
		case <-time.After(40 * time.Second):
			_ = p.Cmd.Process.Kill()
			<-p.Done
			return -1
		}
	}
	return p.Cmd.ProcessState.ExitCode()
}

// LogText is the process's output so far.
func (p *Process) LogText() string {
	data, _ := os.ReadFile(p.LogPath)
	return string(data)
}

// Metric reads one sample from /metrics: series is the name with its labels
// as Prometheus prints them; 0 if absent.
func (p *Process) Metric(series string) (float64, error) {
	rsp, err := http.Get(p.Health + "/metrics")
	if err != nil {
		return 0, err
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(rsp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, nil
}
