package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/syncbuf"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/kubelettest"
)

// node is one simulated node: its own directories and node name.
type node struct {
	t         *testing.T
	name      string
	dir       string
	bootstrap string // bootstrap kubeconfig path
	kubeconf  string // kubelet.conf path
	certDir   string
	config    string
	token     string
}

var nodeSeq int

// newNode makes a node whose bootstrap kubeconfig holds a fresh token.
func newNode(t *testing.T, o controlplane.TokenOptions) *node {
	t.Helper()
	nodeSeq++
	dir := t.TempDir()
	n := &node{
		t: t, dir: dir,
		name:      fmt.Sprintf("%s-%d", strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")), nodeSeq),
		bootstrap: filepath.Join(dir, "etc", "bootstrap-kubelet.conf"),
		kubeconf:  filepath.Join(dir, "etc", "kubelet.conf"),
		certDir:   filepath.Join(dir, "pki"),
		config:    filepath.Join(dir, "config.yaml"),
	}
	if len(n.name) > 60 {
		n.name = n.name[len(n.name)-60:]
	}
	n.name = strings.Trim(strings.ReplaceAll(n.name, "_", "-"), "-")
	if err := os.MkdirAll(filepath.Dir(n.bootstrap), 0o755); err != nil {
		t.Fatal(err)
	}
	n.writeConfig("")
	n.newToken(o)
	return n
}

// writeConfig writes the node's config file with extra YAML appended.
func (n *node) writeConfig(extra string) {
	n.t.Helper()
	cfg := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n" + extra
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// newToken creates a token and writes the bootstrap kubeconfig with it.
func (n *node) newToken(o controlplane.TokenOptions) {
	n.t.Helper()
	tok, err := cp.CreateBootstrapToken(context.Background(), o)
	if err != nil {
		n.t.Fatal(err)
	}
	n.token = tok
	if err := cp.WriteBootstrapKubeconfig(n.bootstrap, tok, false); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) args(extra ...string) []string {
	return append([]string{"run", "--config", n.config, "--node-name", n.name,
		"--bootstrap-kubeconfig", n.bootstrap, "--kubeconfig", n.kubeconf, "--cert-dir", n.certDir}, extra...)
}

// proc is a running certagent with its output captured.
type proc struct {
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan error
}

// start runs `certagent run` for the node with extra flags, capturing its output.
func (n *node) start(extra ...string) *proc {
	n.t.Helper()
	return n.launch(nil, n.args(extra...)...)
}

// launch runs certagent with args and extra environment; when the test ends
// it is killed and its whole output checked for secrets.
func (n *node) launch(env []string, args ...string) *proc {
	n.t.Helper()
	p := &proc{cmd: exec.Command(certagentBin, args...), out: &syncbuf.Buffer{}, done: make(chan error, 1)}
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	n.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		n.assertNoSecrets(p.out.String())
	})
	return p
}

// wait returns the exit code, failing the test after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("certagent: %v", err)
	case <-time.After(timeout):
		t.Fatalf("certagent still running after %s; output:\n%s", timeout, p.out.String())
	}
	return -1
}

func (p *proc) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// runOnce runs certagent run --once and returns its exit code and output.
func (n *node) runOnce(extra ...string) (int, string) {
	n.t.Helper()
	p := n.start(append([]string{"--once"}, extra...)...)
	code := p.wait(n.t, 2*time.Minute)
	return code, p.out.String()
}

// assertNoSecrets checks that output carries neither the token secret nor key material.
func (n *node) assertNoSecrets(out string) {
	if _, secret, ok := strings.Cut(n.token, "."); ok && strings.Contains(out, secret) {
		n.t.Errorf("certagent output contains the bootstrap token secret")
	}
	if strings.Contains(out, "PRIVATE KEY") {
		n.t.Errorf("certagent output contains private key material")
	}
}

// csrs lists the CSRs whose subject is this node's, by signer.
func (n *node) csrs(signer string) []certificatesv1.CertificateSigningRequest {
	n.t.Helper()
	out, err := n.listCSRs(signer)
	if err != nil {
		n.t.Fatal(err)
	}
	return out
}

// listCSRs is csrs without the test's Fatal, for other goroutines.
func (n *node) listCSRs(signer string) ([]certificatesv1.CertificateSigningRequest, error) {
	return kubelettest.NodeCSRs(context.Background(), cp, n.name, signer)
}

// waitForCSR waits until exactly one CSR of signer exists for the node.
func (n *node) waitForCSR(signer string, timeout time.Duration) certificatesv1.CertificateSigningRequest {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := n.csrs(signer); len(l) > 0 {
			return l[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.t.Fatalf("no %s CSR for %s after %s", signer, n.name, timeout)
	return certificatesv1.CertificateSigningRequest{}
}

// waitForOutput waits until the process output contains s.
func (p *proc) waitForOutput(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.out.String(), s) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("output lacks %q after %s:\n%s", s, timeout, p.out.String())
}

// snapshot hashes every file under the node's directory (following nothing),
// so a test can assert that a failure left them untouched.
func (n *node) snapshot() map[string]string {
	n.t.Helper()
	out := map[string]string{}
	_ = filepath.Walk(n.dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		if b := filepath.Base(p); b == ".certagent.lock" || b == ".certagent.sock" {
			return nil // certagent's runtime files: one writer per directory, the renew socket
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			out[p] = "-> " + target
			return nil
		}
		data, _ := os.ReadFile(p)
		out[p] = fmt.Sprintf("%x %v", sha256.Sum256(data), fi.Mode())
		return nil
	})
	return out
}

func assertUnchanged(t *testing.T, before, after map[string]string, ignore ...string) {
	t.Helper()
	skip := func(p string) bool {
		for _, i := range ignore {
			if strings.HasSuffix(p, i) {
				return true
			}
		}
		return false
	}
	for p, h := range before {
		if !skip(p) && after[p] != h {
			t.Errorf("%s changed: %q -> %q", p, h, after[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok && !skip(p) {
			t.Errorf("%s was created", p)
		}
	}
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// statusJSON mirrors the documented `certagent status -o json` (docs/status.md).
type statusJSON struct {
	NodeName   string `json:"nodeName"`
	Kubeconfig struct {
		Path   string `json:"path"`
		Exists bool   `json:"exists"`
	} `json:"kubeconfig"`
	Certificates []struct {
		Kind             string    `json:"kind"`
		Present          bool      `json:"present"`
		Valid            bool      `json:"valid"`
		NotBefore        time.Time `json:"notBefore"`
		NotAfter         time.Time `json:"notAfter"`
		RenewalDeadline  time.Time `json:"renewalDeadline"`
		RemainingSeconds int64     `json:"remainingSeconds"`
		PendingCSR       *struct {
			Name           string `json:"name"`
			ApproveCommand string `json:"approveCommand"`
		} `json:"pendingCSR"`
	} `json:"certificates"`
}

// status runs certagent status -o json for the node.
func (n *node) status() statusJSON {
	n.t.Helper()
	out, err := exec.Command(certagentBin, "status", "-o", "json", "--config", n.config, "--node-name", n.name,
		"--bootstrap-kubeconfig", n.bootstrap, "--kubeconfig", n.kubeconf, "--cert-dir", n.certDir).Output()
	if err != nil {
		n.t.Fatalf("certagent status: %v", err)
	}
	var st statusJSON
	if err := json.Unmarshal(out, &st); err != nil {
		n.t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st
}
