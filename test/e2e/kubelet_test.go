package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/kubelettest"
)

// TestKubeletLivesOnCertagentFiles runs the real kubelet (built from
// k8s.io/kubernetes/cmd/kubelet at the control plane's version) on Debian's
// containerd and runc, configured as README step 5 says, on the files a real
// certagent daemon keeps, with 10-minute certificates, until a minute and a half past the
// first client certificate's NotAfter. The kubelet must never exit or be
// restarted, its Node stays Ready and its Lease renewed by a client
// certificate the first one has been replaced with, and after each serving
// renewal it presents the new certificate, which the API server verifies
// against the cluster CA when it proxies to the node.
func TestKubeletLivesOnCertagentFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	h := kubelettest.NewHost(ctx, t)
	nodeIP := h.NodeIP

	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	// renewBefore 7m: a renewal about every 3 minutes (certificates live 15,
	// NotBefore backdated 5), three of each while the kubelet runs.
	n.writeConfig("rotation:\n  requestedDuration: 10m\n  renewBefore: 7m\nmetrics:\n  address: 127.0.0.1:0\n")
	go n.approver(ctx)
	ns := newNotifySocket(t)
	agent := n.startDaemon(ns)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	for deadline := time.Now().Add(time.Minute); n.current("kubelet-server") == nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no serving certificate\n%s", agent.out.String())
		}
	}
	firstClient := n.current("kubelet-client")
	// certagent's default SANs carry the address the kubelet reports.
	if s := n.current("kubelet-server"); !slices.ContainsFunc(s.IPAddresses, nodeIP.Equal) {
		t.Fatalf("serving certificate IPs %v lack the host's primary address %s", s.IPAddresses, nodeIP)
	}

	k := h.StartKubelet(t, cp, n.name, n.dir, n.kubeconf, n.certDir, cp.CAFile, cp.CACertPEM)
	kubelet, w, exited := k.Cmd, k.Watch, k.Exited
	logPath := w.Log
	pid := kubelet.Process.Pid

	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nkubelet log (%s), last lines:\n%s\ncertagent:\n%s", append(args, logPath, kubelettest.TailFile(logPath, 40), agent.out.String())...)
	}

	// Boot: the Node registers and turns Ready.
	ready, err := k.WaitReady(ctx, nodeIP)
	if err != nil {
		fail("%v", err)
	}

	// A pod on the node: the runtime works, and kubectl logs and exec reach
	// the kubelet through the API server.
	if w.Kubectl, err = controlplane.EnsureKubectl(ctx, t.Logf); err != nil {
		t.Fatal(err)
	}
	var podRunning time.Duration
	w.Pod, podRunning = kubelettest.StartPod(ctx, t, cp, n.name)

	// Run past the first client certificate's NotAfter, watching everything.
	end := firstClient.NotAfter.Add(90 * time.Second)
	lastProxy := time.Time{}
	for now := time.Now(); now.Before(end); now = time.Now() {
		select {
		case err := <-exited:
			fail("the kubelet (PID %d) exited after %s: %v", pid, time.Since(w.Start).Round(time.Second), err)
		case <-time.After(2 * time.Second):
		}
		w.Observe(ctx)
		if time.Since(lastProxy) >= 10*time.Second {
			w.ThroughAPIServer(ctx)
			lastProxy = time.Now()
		}
	}
	w.Observe(ctx)
	w.ThroughAPIServer(ctx)

	// The figures first, then what is wrong with them.
	var problems []string
	problem := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	select {
	case err := <-exited:
		problem("the kubelet (PID %d) exited: %v", pid, err)
	default:
		if err := syscall.Kill(pid, 0); err != nil {
			problem("the kubelet's PID %d is gone: %v", pid, err)
		}
	}
	if node, err := cp.Admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{}); err != nil || !kubelettest.NodeReady(node) {
		problem("Node %s not Ready at the end (%v)", n.name, err)
	}
	if len(w.Client) < 3 {
		problem("fewer than 2 client certificate renewals seen: %s", w.Client)
	}
	if len(w.Serving) < 3 {
		problem("fewer than 2 serving certificate renewals seen: %s", w.Serving)
	}
	var lastRenew time.Time
	if len(w.Leases) > 0 {
		lastRenew = w.Leases[len(w.Leases)-1]
	}
	if !lastRenew.After(firstClient.NotAfter) {
		problem("the Lease was last renewed at %s, not after the first client certificate's NotAfter %s", lastRenew, firstClient.NotAfter)
	}
	gap := w.MaxLeaseGap(time.Now())
	if gap >= 40*time.Second {
		problem("the Lease went %s without renewal (its duration is 40 s): the node would be marked NotReady", gap.Round(time.Second))
	}
	// client-go picked the renewed client certificates up: the first time
	// it logged doing so after each file change (2 s polls: the file may
	// have changed up to 2 s before the test saw it). Renewed every 3
	// minutes and re-read every 5, it may skip one; the Lease check above
	// is what proves it used a renewed one in time.
	var switches []string
	logged := kubelettest.KlogTimes(logPath, kubelettest.ClientRotationLogged)
	for _, c := range w.Client[1:] {
		i := slices.IndexFunc(logged, func(at time.Time) bool { return at.After(c.Seen.Add(-2 * time.Second)) })
		if i < 0 {
			switches = append(switches, "never")
			problem("client-go did not log switching to client certificate %s", c.Serial)
			continue
		}
		switches = append(switches, logged[i].Sub(c.Seen).Round(time.Second).String())
	}
	// Each serving certificate certagent stored is presented, and soon.
	var lags []string
	for _, s := range w.Serving[1:] {
		if at, ok := w.ServedSince(s.Serial); ok {
			lags = append(lags, at.Sub(s.Seen).Round(time.Second).String())
		} else {
			lags = append(lags, "never")
			problem("the kubelet never presented serving certificate %s (on disk since +%s)", s.Serial, s.Seen.Sub(w.Start).Round(time.Second))
		}
	}
	if len(w.Served) == 0 || w.Served[len(w.Served)-1].Serial != w.Serving[len(w.Serving)-1].Serial {
		problem("the kubelet does not present the serving certificate on disk at the end")
	}
	for _, c := range []struct {
		what string
		t    *kubelettest.Tally
	}{
		{"GET /api/v1/nodes/" + n.name + "/proxy/healthz", &w.Proxy},
		{"kubectl logs " + w.Pod, &w.Logs},
		{"kubectl exec " + w.Pod, &w.Exec},
	} {
		if c.t.Before == 0 || c.t.After == 0 || len(c.t.Errs) > 0 {
			problem("%s: %d ok before the first serving renewal, %d after the kubelet presented a renewed one; failures: %v",
				c.what, c.t.Before, c.t.After, c.t.Errs)
		}
	}
	if len(w.DialErrs) > 0 {
		problem("TLS dials to the kubelet (verified against the cluster CA) failed: %v", w.DialErrs)
	}
	t.Logf("kubelet on certagent's files: boot to Node Ready %s, test pod Running %s later; PID %d for %s, never exited; "+
		"client certificates on disk %s (%d renewals), client-go switched %s after they were stored; serving certificates on disk %s (%d renewals), presented by the kubelet %s after they were stored (polled every 2 s); "+
		"served serials over time %s; Lease last renewed %s after the first client certificate's NotAfter, longest gap between renewals %s; "+
		"through the API server (ok before the first serving renewal/after/failed): node proxy /healthz %s, kubectl logs %s, kubectl exec %s; TLS dial errors %d",
		ready.Round(time.Millisecond), podRunning.Round(time.Millisecond), pid, time.Since(w.Start).Round(time.Second),
		w.Client, len(w.Client)-1, strings.Join(switches, ", "), w.Serving, len(w.Serving)-1, strings.Join(lags, ", "),
		w.Served, lastRenew.Sub(firstClient.NotAfter).Round(time.Second), gap.Round(time.Second),
		w.Proxy, w.Logs, w.Exec, len(w.DialErrs))
	if len(problems) > 0 {
		fail("%s", strings.Join(problems, "\n"))
	}
}
