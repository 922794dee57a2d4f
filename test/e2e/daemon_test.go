package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
)

// shortLived makes certificates of the API minimum (10m; the signer backdates
// NotBefore by 5m, so they live 15m) renewed a minute after issue, the
// shortest gap certagent allows between renewals it was not forced to make.
const shortLived = `rotation:
  requestedDuration: 10m
  renewBefore: 9m
metrics:
  address: 127.0.0.1:0
`

// whoAmI authenticates with kubelet.conf as it is on disk now.
func (n *node) whoAmI() (string, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", n.kubeconf)
	if err != nil {
		return "", err
	}
	c, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return "", err
	}
	r, err := c.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return r.Status.UserInfo.Username, nil
}

func pubKeyID(c *x509.Certificate) string { return fmt.Sprintf("%x", c.RawSubjectPublicKeyInfo) }

// TestDaemonRenewsBothCertificates runs the daemon with 10-minute certificates
// due a minute after issue: both are renewed more than once, each time with a
// new key, kubelet.conf keeps authenticating, the hooks run, systemd hears
// READY, STATUS and WATCHDOG, the HTTP endpoints answer (GOMAXPROCS 1), `certagent renew
// --force` beside it has the daemon renew at once, and SIGTERM stops promptly.
func TestDaemonRenewsBothCertificates(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	hookLog := filepath.Join(n.dir, "hooks.log")
	n.writeConfig(shortLived + `hooks:
  postRenew:
  - command: ["/bin/sh", "-c", "echo \"$CERTAGENT_CERT_KIND $CERTAGENT_CERT_FILE $CERTAGENT_NODE_NAME\" >> ` + hookLog + `"]
    timeout: 5s
`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.approver(ctx)
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	addr := p.httpAddr(t)

	keys := map[string]map[string]bool{"kubelet-client": {}, "kubelet-server": {}}
	deadline := time.Now().Add(3*time.Minute + 30*time.Second)
	for time.Now().Before(deadline) && (len(keys["kubelet-client"]) < 3 || len(keys["kubelet-server"]) < 3) {
		for prefix := range keys {
			if c := n.current(prefix); c != nil {
				keys[prefix][pubKeyID(c)] = true
			}
		}
		if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
			t.Fatalf("kubelet.conf stopped authenticating during renewals: %q, %v", who, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	for prefix, k := range keys {
		if len(k) < 3 {
			t.Fatalf("%s: %d distinct keys in 3.5 minutes, want at least 3 (two renewals)\n%s", prefix, len(k), p.out.String())
		}
	}
	// The dated files are pruned to the newest 3 of each kind.
	for _, prefix := range []string{"kubelet-client-2", "kubelet-server-2"} {
		matches, _ := filepath.Glob(filepath.Join(n.certDir, prefix+"*.pem"))
		if len(matches) > 3 {
			t.Errorf("%d %s*.pem files, want at most 3 after pruning", len(matches), prefix)
		}
	}

	// Hooks ran for both kinds with the documented environment.
	hooks := string(mustRead(t, hookLog))
	for _, want := range []string{"client " + filepath.Join(n.certDir, "kubelet-client-current.pem") + " " + n.name, "server " + filepath.Join(n.certDir, "kubelet-server-current.pem") + " " + n.name} {
		if !strings.Contains(hooks, want) {
			t.Errorf("hook log lacks %q:\n%s", want, hooks)
		}
	}

	// systemd heard STATUS and WATCHDOG.
	ns.WaitFor(t, "STATUS", func(m string) bool {
		return strings.HasPrefix(m, "STATUS=client valid until ") && strings.Contains(m, "; serving: ")
	}, 30*time.Second)
	ns.WaitFor(t, "WATCHDOG=1", func(m string) bool { return m == "WATCHDOG=1" }, 10*time.Second)

	// HTTP endpoints.
	if code, body := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := httpGet(t, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != 200 || metric(body, "certagent_ready") != "1" {
		t.Fatalf("/metrics = %d:\n%s", code, body)
	}
	for _, series := range []string{`certagent_renewal_attempts_total{certificate="client"}`, `certagent_renewal_attempts_total{certificate="server"}`} {
		var v float64
		fmt.Sscanf(metric(body, series), "%g", &v)
		if v < 3 {
			t.Errorf("%s = %v, want at least 3", series, v)
		}
	}
	// One processor unless the environment says otherwise (docs/metrics.md, "Memory").
	if v := metric(body, "go_sched_gomaxprocs_threads"); v != "1" && os.Getenv("GOMAXPROCS") == "" {
		t.Errorf("go_sched_gomaxprocs_threads = %q, want 1 with GOMAXPROCS unset", v)
	}
	if v := metric(body, `certagent_certificate_expiry_seconds{certificate="client"}`); v == "" || strings.HasPrefix(v, "-") || v == "0" {
		t.Errorf("client expiry seconds = %q", v)
	}

	// `certagent renew --force` beside the daemon asks it to renew: one
	// writer, a new key at once, one new CSR of each kind.
	before := pubKeyID(n.current("kubelet-client"))
	clientCSRs, servingCSRs := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)), len(n.csrs(certificatesv1.KubeletServingSignerName))
	renew := n.launch(nil, append([]string{"renew", "--force", "--timeout", "30s"}, n.args()[1:]...)...)
	if code := renew.wait(t, time.Minute); code != 0 {
		t.Fatalf("renew --force beside the daemon exited %d:\n%s", code, renew.out.String())
	}
	if out := renew.out.String(); !strings.Contains(out, "the running certagent daemon did the work") || !strings.Contains(out, "client: renewed") || !strings.Contains(out, "server: renewed") {
		t.Fatalf("renew --force output:\n%s", out)
	}
	if pubKeyID(n.current("kubelet-client")) == before {
		t.Fatal("renew --force did not change the client certificate")
	}
	if c, s := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)), len(n.csrs(certificatesv1.KubeletServingSignerName)); c > clientCSRs+2 || s > servingCSRs+2 {
		t.Fatalf("renew --force made %d client and %d serving CSRs (one each, plus at most one scheduled renewal)", c-clientCSRs, s-servingCSRs)
	}
	p.waitForOutput(t, "asked to renew", 5*time.Second)
	cancel() // stop approving: the next serving renewal then waits, which SIGTERM must not mind

	// SIGTERM stops within a few seconds even while a serving CSR is pending, keeping its key.
	for deadline := time.Now().Add(2 * time.Minute); !exists(filepath.Join(n.certDir, "kubelet-server-pending.key")); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no pending serving renewal within 2 minutes\n%s", p.out.String())
		}
	}
	p.waitForOutput(t, "waiting for approval", 10*time.Second)
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("SIGTERM took %s", took)
	}
	ns.WaitFor(t, "STOPPING=1", func(m string) bool { return m == "STOPPING=1" }, time.Second)
	if !exists(filepath.Join(n.certDir, "kubelet-server-pending.key")) {
		t.Error("the pending serving key was not kept across SIGTERM")
	}
}

// TestDaemonKillDuringRenewalReusesCSR: kill -9 while a serving renewal is
// pending; the restarted daemon finds the same CSR, which then gets used.
func TestDaemonKillDuringRenewalReusesCSR(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig(shortLived)
	ctx, cancel := context.WithCancel(context.Background())
	go n.approver(ctx)
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	for deadline := time.Now().Add(time.Minute); n.current("kubelet-server") == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no serving certificate\n%s", p.out.String())
		}
	}
	cancel()
	// The renewal comes a minute after issue (renewBefore 9m of a lifetime of
	// 10m plus the signer's 5 minutes of backdating) and stays pending
	// without the approver.
	var pending certificatesv1.CertificateSigningRequest
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		var found bool
		for _, c := range n.csrs(certificatesv1.KubeletServingSignerName) {
			if len(c.Status.Conditions) == 0 {
				pending, found = c, true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending serving renewal\n%s", p.out.String())
		}
	}
	p.kill9(t)
	servingCSRs := len(n.csrs(certificatesv1.KubeletServingSignerName))

	p = n.startDaemon(ns)
	p.waitForOutput(t, "found our pending certificate signing request", 30*time.Second)
	if err := cp.ApproveCSR(context.Background(), pending.Name); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		c, err := cp.Admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), pending.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cur := n.current("kubelet-server"); cur != nil && len(c.Status.Certificate) > 0 && strings.Contains(string(mustRead(t, filepath.Join(n.certDir, "kubelet-server-current.pem"))), strings.TrimSpace(string(c.Status.Certificate))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the restarted daemon did not store the certificate of %s\n%s", pending.Name, p.out.String())
		}
	}
	if got := len(n.csrs(certificatesv1.KubeletServingSignerName)); got != servingCSRs {
		t.Fatalf("%d serving CSRs after the restart, %d before: the restart made a new request", got, servingCSRs)
	}
}

// TestDaemonDeniedServingNoStorm: a denied serving CSR shows in STATUS and
// metrics, and the agent backs off instead of posting new CSRs.
func TestDaemonDeniedServingNoStorm(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("metrics:\n  address: 127.0.0.1:0\n")
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	addr := p.httpAddr(t)
	csr := n.waitForCSR(certificatesv1.KubeletServingSignerName, time.Minute)
	ns.WaitFor(t, "STATUS waiting for approval", func(m string) bool {
		return strings.Contains(m, "serving: waiting for approval of "+csr.Name+" (kubectl certificate approve "+csr.Name+")")
	}, 30*time.Second)
	if err := cp.DenyCSR(context.Background(), csr.Name, "NotOurNode", "names do not match"); err != nil {
		t.Fatal(err)
	}
	ns.WaitFor(t, "STATUS after denial", func(m string) bool {
		return strings.Contains(m, "serving: retrying at ") && strings.Contains(m, "was denied")
	}, 30*time.Second)
	time.Sleep(15 * time.Second)
	if got := len(n.csrs(certificatesv1.KubeletServingSignerName)); got != 1 {
		t.Fatalf("%d serving CSRs 15 s after a denial, want 1 (back-off, no storm)", got)
	}
	_, body := httpGet(t, "http://"+addr+"/metrics")
	if v := metric(body, `certagent_renewal_errors_total{certificate="server"}`); v != "1" {
		t.Errorf("server errors_total = %q, want 1", v)
	}
	if v := metric(body, `certagent_ready`); v != "1" {
		t.Errorf("ready = %q: a denied serving CSR must not make the node unready", v)
	}
}

// TestDaemonStrandedNodeRecovers: an expired client certificate and no
// bootstrap kubeconfig; the daemon says what it waits for, and a bootstrap
// kubeconfig dropped in place recovers the node without a restart.
func TestDaemonStrandedNodeRecovers(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  enabled: false\nmetrics:\n  address: 127.0.0.1:0\n")
	withExpiredClient(t, n)
	boot := mustRead(t, n.bootstrap)
	if err := os.Remove(n.bootstrap); err != nil {
		t.Fatal(err)
	}
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	addr := p.httpAddr(t)
	ns.WaitFor(t, "STATUS waiting for a bootstrap kubeconfig", func(m string) bool {
		return m == "STATUS=waiting for a bootstrap kubeconfig at "+n.bootstrap+" (no valid "+n.kubeconf+")"
	}, 30*time.Second)
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 503 {
		t.Errorf("/readyz = %d with an expired certificate, want 503", code)
	}
	// Drop a fresh bootstrap kubeconfig (written elsewhere, renamed in, as cloud-init would).
	tmp := filepath.Join(n.dir, "bootstrap.tmp")
	if err := os.WriteFile(tmp, boot, 0o600); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	if err := os.Rename(tmp, n.bootstrap); err != nil {
		t.Fatal(err)
	}
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, 20*time.Second)
	if took := time.Since(dropped); took > 10*time.Second {
		t.Errorf("recovered %s after the bootstrap kubeconfig appeared", took)
	}
	if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
		t.Fatalf("after recovery kubelet.conf is %q, %v", who, err)
	}
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d after recovery", code)
	}
}

// TestDaemonSurvivesAPIServerOutage: the API server is down for 30 s while
// renewals are due; the daemon backs off and renews within its back-off cap
// after the server returns.
func TestDaemonSurvivesAPIServerOutage(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig(shortLived + "serving:\n  enabled: false\n")
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = cp.StartAPIServer(context.Background())
		}
	}()
	// The renewal falls due a minute after issue, during the outage.
	p.waitForOutput(t, "attempt failed", 90*time.Second)
	time.Sleep(10 * time.Second)
	before := pubKeyID(n.current("kubelet-client"))
	if err := cp.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = false
	back := time.Now()
	// Back-off after 30 s of failures is at most 16 s (+20 %); the cap is 2 min.
	for deadline := back.Add(2*time.Minute + 30*time.Second); ; time.Sleep(200 * time.Millisecond) {
		if c := n.current("kubelet-client"); c != nil && pubKeyID(c) != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no renewal within the back-off cap after the API server returned\n%s", p.out.String())
		}
	}
	t.Logf("renewed %s after the API server returned", time.Since(back).Round(100*time.Millisecond))
	if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
		t.Fatalf("kubelet.conf after the outage: %q, %v", who, err)
	}
}

// TestDaemonNoticesDeletedKubeconfig: kubelet.conf deleted under a running
// daemon is noticed at once (file watch, no restart, no clock tick): STATUS
// says what it now waits for and /readyz turns 503; a bootstrap kubeconfig
// dropped afterwards brings it back.
func TestDaemonNoticesDeletedKubeconfig(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  enabled: false\nmetrics:\n  address: 127.0.0.1:0\n")
	boot := mustRead(t, n.bootstrap)
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	addr := p.httpAddr(t)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	if err := os.Remove(n.kubeconf); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	ns.WaitFor(t, "STATUS after deletion", func(m string) bool {
		return strings.HasPrefix(m, "STATUS=waiting for a bootstrap kubeconfig at "+n.bootstrap)
	}, 10*time.Second)
	t.Logf("deletion noticed after %s", time.Since(removed).Round(time.Millisecond))
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 503 {
		t.Errorf("/readyz = %d without kubelet.conf, want 503", code)
	}
	if err := os.WriteFile(n.bootstrap, boot, 0o600); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if who, err := n.whoAmI(); err == nil && who == "system:node:"+n.name {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no working kubelet.conf after the bootstrap kubeconfig came back\n%s", p.out.String())
		}
	}
	if code, _ := httpGet(t, "http://"+addr+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d after recovery", code)
	}
}

// TestDaemonFinishesABootstrapWhoseKubeconfigWasDeleted: the bootstrap
// kubeconfig is deleted while the client CSR waits for approval, as kubeadm
// join does when it gives up (it removes bootstrap-kubelet.conf on its way
// out, whatever happened); approved later, the certificate is stored and
// kubelet.conf works: the request was made, the approval is not wasted.
func TestDaemonFinishesABootstrapWhoseKubeconfigWasDeleted(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{}) // client CSRs wait for approval
	n.writeConfig("serving:\n  enabled: false\nmetrics:\n  address: 127.0.0.1:0\n")
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	csr := n.waitForCSR(certificatesv1.KubeAPIServerClientKubeletSignerName, time.Minute)
	if err := os.Remove(n.bootstrap); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the daemon sees the deletion
	if err := cp.ApproveCSR(context.Background(), csr.Name); err != nil {
		t.Fatal(err)
	}
	approved := time.Now()
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	if who, err := n.whoAmI(); err != nil || who != "system:node:"+n.name {
		t.Fatalf("kubelet.conf authenticates as %q, %v\n%s", who, err, p.out.String())
	}
	t.Logf("kubelet.conf works %s after the approval", time.Since(approved).Round(time.Millisecond))
}
