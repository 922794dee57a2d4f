package approver

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/syncbuf"
	"github.com/certagent/certagent/test/kubelettest"
)

// TestKubeletServesTheApprovedCertificate: the real certagent daemon
// bootstraps a node; its serving CSR is approved by the approver alone (the
// shared one, as the shipped service account with the shipped RBAC; no
// other approver runs); the real kubelet on containerd serves that
// certificate, a pod runs on the node, and the node proxy (/healthz),
// kubectl logs and kubectl exec work through the API server, which was
// started with --kubelet-certificate-authority = the cluster's trust bundle.
// The control: the same kubelet restarted on a certificate of another CA
// (same subject and names) is refused by the API server ("x509: certificate signed by unknown
// authority"),
// so the API server does verify the kubelet's certificate.
//
// A new node's first serving CSR comes before its Node (docs/approver.md);
// here the Node is created ahead of the kubelet, as provisioning would,
// reporting the host's primary address, which the kubelet then reports too.
func TestKubeletServesTheApprovedCertificate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	h := kubelettest.NewHost(ctx, t)
	const name = "ap-kubelet"
	makeNode(t, name, "InternalIP="+h.NodeIP.String(), "Hostname="+name)
	cmd := certagent(t, name)
	dir := filepath.Dir(cmd.Args[len(cmd.Args)-1])
	certDir := filepath.Join(dir, "pki")
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	serving := waitLeaf(t, certDir, "kubelet-server", out)
	servingCSRApproved(t, name)

	k := h.StartKubelet(t, cp, name, dir, filepath.Join(dir, "kubelet.conf"), certDir, cp.CAFile, cp.CACertPEM)
	if _, err := k.WaitReady(ctx, h.NodeIP); err != nil {
		t.Fatalf("%v\nkubelet log:\n%s", err, kubelettest.TailFile(k.Watch.Log, 40))
	}
	w := k.Watch
	w.Kubectl = kubectlBin
	w.Pod, _ = kubelettest.StartPod(ctx, t, cp, name)
	w.Observe(ctx)
	w.ThroughAPIServer(ctx)
	if len(w.Served) != 1 || w.Served[0].Serial != kubelettest.ShortSerial(serving.SerialNumber) {
		t.Fatalf("the kubelet serves %s, want the approved certificate %s; TLS dial errors %v",
			w.Served, kubelettest.ShortSerial(serving.SerialNumber), w.DialErrs)
	}
	for what, c := range map[string]kubelettest.Tally{"node proxy /healthz": w.Proxy, "kubectl logs": w.Logs, "kubectl exec": w.Exec} {
		if c.Before != 1 || len(c.Errs) > 0 {
			t.Errorf("%s through the API server to the kubelet: %d ok, failures %v", what, c.Before, c.Errs)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	deletePodNow(ctx, t, w.Pod)
	_ = cmd.Process.Signal(syscall.SIGTERM) // certagent would restore its own certificate
	_ = cmd.Wait()
	stopKubelet(t, k)
	foreign := writeForeignServing(t, certDir, serving)
	k = h.StartKubelet(t, cp, name, dir, filepath.Join(dir, "kubelet.conf"), certDir, cp.CAFile, cp.CACertPEM)
	waitServes(ctx, t, k, foreign)
	err := proxyHealthz(ctx, k)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("node proxy /healthz to a kubelet serving a certificate of another CA: %v, want the API server to refuse it (unknown authority)", err)
	}
	t.Logf("the kubelet served the approved serving certificate %s; through the API server node proxy /healthz, kubectl logs and kubectl exec "+
		"each ok; with a certificate of another CA the API server refuses: %v", w.Served, err)
}

// stopKubelet stops k and waits for it to exit.
func stopKubelet(t *testing.T, k *kubelettest.Kubelet) {
	t.Helper()
	_ = k.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.Exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the kubelet did not stop 30 s after SIGTERM")
	}
}
