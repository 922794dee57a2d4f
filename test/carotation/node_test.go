package carotation

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certagent/certagent/internal/syncbuf"
	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/kubelettest"
)

// node is the node's files: certagent's configuration and what it keeps
// for the kubelet.
type node struct {
	name, dir                   string
	config, bootstrap, kubeconf string
	certDir                     string
	clientCA                    string // the kubelet's clientCAFile, which certagent keeps
}

// agentConfig follows the cluster's published trust; metrics on a free port.
const agentConfig = `apiVersion: certagent.io/v1alpha1
kind: AgentConfig
metrics:
  address: 127.0.0.1:0
trust:
  follow: true
  kubeletClientCAFile: %s
  reissueSpread: %s
`

// newNode writes the node's certagent configuration and a bootstrap
// kubeconfig with a fresh auto-approved token and the cluster CA's file.
func newNode(ctx context.Context, t *testing.T, name string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{name: name, dir: dir, config: filepath.Join(dir, "config.yaml"),
		bootstrap: filepath.Join(dir, "bootstrap-kubelet.conf"), kubeconf: filepath.Join(dir, "kubelet.conf"),
		certDir: filepath.Join(dir, "pki"), clientCA: filepath.Join(dir, "kubelet-client-ca.crt")}
	config := fmt.Appendf(nil, agentConfig, n.clientCA, reissueSpread)
	if withPostTrust() {
		config = fmt.Appendf(config, restartHooks, n.restartRequests(), n.restartRequests())
	}
	if err := os.WriteFile(n.config, config, 0o600); err != nil {
		t.Fatal(err)
	}
	token, err := cp.CreateBootstrapToken(ctx, controlplane.TokenOptions{AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.WriteBootstrapKubeconfig(n.bootstrap, token, false); err != nil {
		t.Fatal(err)
	}
	return n
}

// daemon is a running `certagent run`.
type daemon struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan error
}

// startDaemon runs certagent for the node under a notify socket, with the
// watchdog on, as its systemd unit does; it is killed when the test ends.
func (n *node) startDaemon(t *testing.T, ns *kubelettest.NotifySocket) *daemon {
	t.Helper()
	d := &daemon{out: &syncbuf.Buffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(certagentBin, "run", "--config", n.config, "--node-name", n.name,
		"--bootstrap-kubeconfig", n.bootstrap, "--kubeconfig", n.kubeconf, "--cert-dir", n.certDir)
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+ns.Path, "WATCHDOG_USEC=2000000")
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		if strings.Contains(d.out.String(), "PRIVATE KEY") {
			t.Errorf("certagent's output holds private key material")
		}
	})
	return d
}

// caFile is the file certagent keeps kubelet.conf's CA in (trust.caFile's
// default).
func (n *node) caFile() string { return filepath.Join(n.certDir, "kube-apiserver-ca.crt") }
