package kubelettest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/noderuntime"
)

// Host is what a kubelet needs of the machine: its binary (built from
// k8s.io/kubernetes/cmd/kubelet at the control plane's version), Debian's
// containerd and runc with the test image, and the address it reports.
type Host struct {
	KubeletBin string
	RootDir    string // a short directory of the test's own
	Endpoint   string // containerd's socket
	NodeIP     net.IP // the host's primary address
}

// NewHost starts containerd for the test, stopped when it ends; it skips
// the test where the host has no address a kubelet could report.
func NewHost(ctx context.Context, t *testing.T) *Host {
	t.Helper()
	if err := noderuntime.Check(); err != nil {
		t.Fatalf("the kubelet suite runs a real container runtime: %v", err)
	}
	kubeletBin, err := controlplane.EnsureKubelet(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	// A short directory: containerd's socket name must fit in 108 bytes.
	rt, err := os.MkdirTemp("", "kl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { noderuntime.Unmount(rt); os.RemoveAll(rt) })
	image, err := noderuntime.BuildImage(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctd, err := noderuntime.Start(ctx, filepath.Join(rt, "containerd"), image)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ctd.Close)
	nodeIP, err := utilnet.ChooseHostInterface()
	if err != nil {
		t.Skipf("no host interface the kubelet could report as the node's address: %v", err)
	}
	return &Host{KubeletBin: kubeletBin, RootDir: rt, Endpoint: ctd.Endpoint, NodeIP: nodeIP}
}

// Kubelet is a kubelet the test started and watches.
type Kubelet struct {
	Cmd    *exec.Cmd
	Exited <-chan error
	Watch  *Watch
	bin    string
	args   []string
}

// StartKubelet writes the kubelet's configuration (Config with certDir,
// clientCAFile and a free port) to dir and runs the kubelet as node on
// kubeconfig, at -v=1 (client-go logs when it finds a new client
// certificate file); its Watch trusts roots for the kubelet's serving
// certificate.
func (h *Host) StartKubelet(t *testing.T, cp *controlplane.ControlPlane, node, dir, kubeconfig, certDir, clientCAFile string, roots []byte) *Kubelet {
	t.Helper()
	port := FreePort(t)
	cfg := filepath.Join(dir, "kubelet-config.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, Config, certDir, clientCAFile, port, h.Endpoint, h.RootDir), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--hostname-override", node, "--kubeconfig", kubeconfig,
		"--config", cfg, "--cert-dir", certDir, "--root-dir", filepath.Join(h.RootDir, "kubelet"), "-v=1"}
	cmd, logPath, exited := Start(t, h.KubeletBin, args...)
	w := &Watch{CP: cp, Node: node, CertDir: certDir, Start: time.Now(),
		Addr: net.JoinHostPort(h.NodeIP.String(), strconv.Itoa(port)), Log: logPath, Roots: x509Pool(roots)}
	return &Kubelet{Cmd: cmd, Exited: exited, Watch: w, bin: h.KubeletBin, args: args}
}

// WaitReady waits up to 3 minutes for the Node to register and turn Ready
// with the host's address as its InternalIP, and returns how long that took
// since the kubelet started.
func (k *Kubelet) WaitReady(ctx context.Context, nodeIP net.IP) (time.Duration, error) {
	w := k.Watch
	for {
		select {
		case err := <-k.Exited:
			return 0, fmt.Errorf("the kubelet exited during boot: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if node, err := w.CP.Admin.CoreV1().Nodes().Get(ctx, w.Node, metav1.GetOptions{}); err == nil && NodeReady(node) {
			if got := InternalIP(node); got != nodeIP.String() {
				return 0, fmt.Errorf("Node InternalIP %q, want %s", got, nodeIP)
			}
			return time.Since(w.Start), nil
		}
		if time.Since(w.Start) > 3*time.Minute {
			return 0, fmt.Errorf("Node %s not Ready 3 minutes after the kubelet started", w.Node)
		}
	}
}
