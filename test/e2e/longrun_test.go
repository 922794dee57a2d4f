package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// TestNoStormWhenTheSignerIssuesShorter: renewBefore 25h, and the signer
// issues 24-hour certificates (its --cluster-signing-duration; nothing in
// certagent's config could catch it). Before the fix the deadline was
// NotBefore and the daemon renewed in a loop (215 CSRs in 20 s were seen
// with 10-minute certificates); now it renews at 70-90 % of the lifetime.
func TestNoStormWhenTheSignerIssuesShorter(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("rotation:\n  renewBefore: 25h\nserving:\n  enabled: false\nmetrics:\n  address: 127.0.0.1:0\n")
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	time.Sleep(20 * time.Second)
	if got := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)); got != 1 {
		t.Fatalf("%d client CSRs in 20 s, want 1\n%s", got, p.out.String())
	}
	st := n.status()
	if d := st.Certificates[0].RenewalDeadline.Sub(st.Certificates[0].NotBefore); d < 16*time.Hour {
		t.Fatalf("renewal deadline %s after NotBefore, want 70-90 %% of 24 h", d)
	}
}

// TestStormConfigIsRefused: a renewBefore that is not shorter than the
// requested lifetime is refused at start, naming both keys.
func TestStormConfigIsRefused(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("rotation:\n  requestedDuration: 10m\n  renewBefore: 20m\n")
	code, out := n.runOnce()
	if code != 2 || !strings.Contains(out, "rotation.renewBefore 20m0s is not shorter than the certificate lifetime rotation.requestedDuration 10m0s") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)) != 0 {
		t.Fatal("a refused configuration posted a CSR")
	}
}

// TestReloadAppliesOnlyWhatChanged: SIGHUP (systemctl reload) re-reads the
// file: a new serving name posts one serving CSR and no client CSR; a
// setting that needs a restart is refused, naming it.
func TestReloadAppliesOnlyWhatChanged(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	base := "metrics:\n  address: 127.0.0.1:0\n"
	n.writeConfig(base)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.approver(ctx)
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	for deadline := time.Now().Add(time.Minute); n.current("kubelet-server") == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no serving certificate\n%s", p.out.String())
		}
	}
	clientCSRs, servingCSRs := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)), len(n.csrs(certificatesv1.KubeletServingSignerName))

	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitForOutput(t, "reload: configuration unchanged", 5*time.Second)

	n.writeConfig(base + "serving:\n  dnsNames: [" + n.name + ".example]\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitForOutput(t, "reload: configuration applied", 5*time.Second)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if c := n.current("kubelet-server"); c != nil && strings.Contains(strings.Join(c.DNSNames, ","), n.name+".example") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no serving certificate with the new name\n%s", p.out.String())
		}
	}
	if c, s := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)), len(n.csrs(certificatesv1.KubeletServingSignerName)); c != clientCSRs || s != servingCSRs+1 {
		t.Fatalf("the reload made %d client and %d serving CSRs, want 0 and 1", c-clientCSRs, s-servingCSRs)
	}

	n.writeConfig("metrics:\n  address: 127.0.0.1:1\n")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitForOutput(t, `reload: refused, keeping the running configuration: these settings take effect only on a restart (systemctl restart certagent)	{"settings": ["metrics.address"`, 5*time.Second)
}

// TestRejectedKubeletConfRecovers: kubelet.conf holds a certificate within
// its dates that the API server does not accept (401, as after a cluster
// rebuild). The daemon does not say READY; STATUS and /readyz say what is
// wrong and what to do; a bootstrap kubeconfig dropped in place recovers
// the node without a restart.
func TestRejectedKubeletConfRecovers(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  enabled: false\nmetrics:\n  address: 127.0.0.1:0\n")
	withSelfSignedClient(t, n, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	boot := mustRead(t, n.bootstrap)
	if err := os.Remove(n.bootstrap); err != nil {
		t.Fatal(err)
	}
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	addr := p.httpAddr(t)
	want := "STATUS=client rejected by the API server (Unauthorized); drop a bootstrap kubeconfig at " + n.bootstrap + " to bootstrap again"
	ns.WaitFor(t, "STATUS rejected", func(m string) bool { return m == want }, 30*time.Second)
	for _, m := range ns.All() {
		if m == "READY=1" {
			t.Fatal("READY=1 with a kubelet.conf the API server rejects")
		}
	}
	if code, body := httpGet(t, "http://"+addr+"/readyz"); code != 503 {
		t.Errorf("/readyz = %d %s, want 503", code, body)
	}
	tmp := filepath.Join(n.dir, "bootstrap.tmp")
	if err := os.WriteFile(tmp, boot, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, n.bootstrap); err != nil {
		t.Fatal(err)
	}
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, 30*time.Second)
	if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
		t.Fatalf("after recovery kubelet.conf is %q, %v", who, err)
	}
	if exists(n.bootstrap) {
		t.Error("the bootstrap kubeconfig was kept after it worked")
	}
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d after recovery", code)
	}
}

// TestRunOnceBesideTheDaemon: `run --once` while the daemon holds the
// certificate directory does not write beside it: the daemon reports that
// nothing is due, and no temporary file of the daemon's is touched.
func TestRunOnceBesideTheDaemon(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  enabled: false\nmetrics:\n  address: 127.0.0.1:0\n")
	ns := newNotifySocket(t)
	n.startDaemon(ns)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	code, out := n.runOnce()
	if code != 0 || !strings.Contains(out, "the running certagent daemon did the work") || !strings.Contains(out, "client: valid until") || !strings.Contains(out, "not due") {
		t.Fatalf("run --once beside the daemon: exit %d\n%s", code, out)
	}
	if got := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)); got != 1 {
		t.Fatalf("%d client CSRs, want 1", got)
	}
}
