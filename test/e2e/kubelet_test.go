package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/noderuntime"
)

// kubeletConfig is README step 5's KubeletConfiguration, plus what a
// kubeadm-style kubelet has beside it: x509 client authentication with the
// cluster CA (the API server's kubelet client certificate), and the file's
// defaults for the rest (webhook authentication and authorization, no
// anonymous access). The lines after the blank one fit the kubelet to the
// test machine, not to certagent: the runtime's socket, directories of the
// test's own, cgroupfs on the hosts' cgroup v1 (which the kubelet refuses
// unless told), no swap check, and eviction and image garbage collection
// thresholds that a nearly full CI disk does not trip.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
rotateCertificates: false
serverTLSBootstrap: false
tlsCertFile: %[1]s/kubelet-server-current.pem
tlsPrivateKeyFile: %[1]s/kubelet-server-current.pem
authentication:
  x509:
    clientCAFile: %[2]s
port: %[3]d
healthzPort: 0

containerRuntimeEndpoint: %[4]s
podLogsDirectory: %[5]s/pod-logs
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
evictionHard:
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`

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

	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	// renewBefore 7m: a renewal about every 3 minutes (certificates live 15,
	// NotBefore backdated 5), three of each while the kubelet runs.
	n.writeConfig("rotation:\n  requestedDuration: 10m\n  renewBefore: 7m\nmetrics:\n  address: 127.0.0.1:0\n")
	go n.approver(ctx)
	ns := newNotifySocket(t)
	agent := n.startDaemon(ns)
	ns.waitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
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

	port := freePort(t)
	cfg := filepath.Join(n.dir, "kubelet-config.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, kubeletConfig, n.certDir, cp.CAFile, port, ctd.Endpoint, rt), 0o600); err != nil {
		t.Fatal(err)
	}
	// -v=1: client-go logs when it finds a new client certificate file.
	kubelet, logPath, exited := startKubelet(t, kubeletBin, "--hostname-override", n.name, "--kubeconfig", n.kubeconf,
		"--config", cfg, "--cert-dir", n.certDir, "--root-dir", filepath.Join(rt, "kubelet"), "-v=1")
	pid := kubelet.Process.Pid
	w := &kubeletWatch{n: n, start: time.Now(), addr: net.JoinHostPort(nodeIP.String(), strconv.Itoa(port)), log: logPath}
	w.roots = x509.NewCertPool()
	w.roots.AppendCertsFromPEM(cp.CACertPEM)

	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\nkubelet log (%s), last lines:\n%s\ncertagent:\n%s", append(args, logPath, tailFile(logPath, 40), agent.out.String())...)
	}

	// Boot: the Node registers and turns Ready.
	var ready time.Duration
	for ready == 0 {
		select {
		case err := <-exited:
			fail("the kubelet exited during boot: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
		if node, err := cp.Admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{}); err == nil && nodeReady(node) {
			ready = time.Since(w.start)
			if got := internalIP(node); got != nodeIP.String() {
				fail("Node InternalIP %q, want %s", got, nodeIP)
			}
		}
		if time.Since(w.start) > 3*time.Minute {
			fail("Node %s not Ready 3 minutes after the kubelet started", n.name)
		}
	}

	// A pod on the node: the runtime works, and kubectl logs and exec reach
	// the kubelet through the API server.
	if w.kubectl, err = controlplane.EnsureKubectl(ctx, t.Logf); err != nil {
		t.Fatal(err)
	}
	var podRunning time.Duration
	w.pod, podRunning = startPod(ctx, t, n.name)

	// Run past the first client certificate's NotAfter, watching everything.
	end := firstClient.NotAfter.Add(90 * time.Second)
	lastProxy := time.Time{}
	for now := time.Now(); now.Before(end); now = time.Now() {
		select {
		case err := <-exited:
			fail("the kubelet (PID %d) exited after %s: %v", pid, time.Since(w.start).Round(time.Second), err)
		case <-time.After(2 * time.Second):
		}
		w.observe(ctx)
		if time.Since(lastProxy) >= 10*time.Second {
			w.throughAPIServer(ctx)
			lastProxy = time.Now()
		}
	}
	w.observe(ctx)
	w.throughAPIServer(ctx)

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
	if node, err := cp.Admin.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{}); err != nil || !nodeReady(node) {
		problem("Node %s not Ready at the end (%v)", n.name, err)
	}
	if len(w.client) < 3 {
		problem("fewer than 2 client certificate renewals seen: %s", w.client)
	}
	if len(w.serving) < 3 {
		problem("fewer than 2 serving certificate renewals seen: %s", w.serving)
	}
	var lastRenew time.Time
	if len(w.leases) > 0 {
		lastRenew = w.leases[len(w.leases)-1]
	}
	if !lastRenew.After(firstClient.NotAfter) {
		problem("the Lease was last renewed at %s, not after the first client certificate's NotAfter %s", lastRenew, firstClient.NotAfter)
	}
	gap := w.maxLeaseGap(time.Now())
	if gap >= 40*time.Second {
		problem("the Lease went %s without renewal (its duration is 40 s): the node would be marked NotReady", gap.Round(time.Second))
	}
	// client-go picked the renewed client certificates up: the first time
	// it logged doing so after each file change (2 s polls: the file may
	// have changed up to 2 s before the test saw it). Renewed every 3
	// minutes and re-read every 5, it may skip one; the Lease check above
	// is what proves it used a renewed one in time.
	var switches []string
	logged := klogTimes(logPath, clientRotationLogged)
	for _, c := range w.client[1:] {
		i := slices.IndexFunc(logged, func(at time.Time) bool { return at.After(c.seen.Add(-2 * time.Second)) })
		if i < 0 {
			switches = append(switches, "never")
			problem("client-go did not log switching to client certificate %s", c.serial)
			continue
		}
		switches = append(switches, logged[i].Sub(c.seen).Round(time.Second).String())
	}
	// Each serving certificate certagent stored is presented, and soon.
	var lags []string
	for _, s := range w.serving[1:] {
		if at, ok := w.servedSince(s.serial); ok {
			lags = append(lags, at.Sub(s.seen).Round(time.Second).String())
		} else {
			lags = append(lags, "never")
			problem("the kubelet never presented serving certificate %s (on disk since +%s)", s.serial, s.seen.Sub(w.start).Round(time.Second))
		}
	}
	if len(w.served) == 0 || w.served[len(w.served)-1].serial != w.serving[len(w.serving)-1].serial {
		problem("the kubelet does not present the serving certificate on disk at the end")
	}
	for _, c := range []struct {
		what string
		t    *tally
	}{
		{"GET /api/v1/nodes/" + n.name + "/proxy/healthz", &w.proxy},
		{"kubectl logs " + w.pod, &w.logs},
		{"kubectl exec " + w.pod, &w.exec},
	} {
		if c.t.before == 0 || c.t.after == 0 || len(c.t.errs) > 0 {
			problem("%s: %d ok before the first serving renewal, %d after the kubelet presented a renewed one; failures: %v",
				c.what, c.t.before, c.t.after, c.t.errs)
		}
	}
	if len(w.dialErrs) > 0 {
		problem("TLS dials to the kubelet (verified against the cluster CA) failed: %v", w.dialErrs)
	}
	t.Logf("kubelet on certagent's files: boot to Node Ready %s, test pod Running %s later; PID %d for %s, never exited; "+
		"client certificates on disk %s (%d renewals), client-go switched %s after they were stored; serving certificates on disk %s (%d renewals), presented by the kubelet %s after they were stored (polled every 2 s); "+
		"served serials over time %s; Lease last renewed %s after the first client certificate's NotAfter, longest gap between renewals %s; "+
		"through the API server (ok before the first serving renewal/after/failed): node proxy /healthz %s, kubectl logs %s, kubectl exec %s; TLS dial errors %d",
		ready.Round(time.Millisecond), podRunning.Round(time.Millisecond), pid, time.Since(w.start).Round(time.Second),
		w.client, len(w.client)-1, strings.Join(switches, ", "), w.serving, len(w.serving)-1, strings.Join(lags, ", "),
		w.served, lastRenew.Sub(firstClient.NotAfter).Round(time.Second), gap.Round(time.Second),
		w.proxy, w.logs, w.exec, len(w.dialErrs))
	if len(problems) > 0 {
		fail("%s", strings.Join(problems, "\n"))
	}
}

// clientRotationLogged is what client-go's transport (cert_rotation.go) logs
// at -v=1 when it re-read the client certificate file, found it changed and
// closed its connections to use it.
const clientRotationLogged = "Certificate rotation detected, shutting down client connections"

// kubeletWatch records what the test sees of a running kubelet over time.
type kubeletWatch struct {
	n     *node
	start time.Time
	addr  string // the kubelet's server, nodeIP:port
	roots *x509.CertPool
	log   string // the kubelet's log

	client, serving, served certSeries // distinct serials in the order seen
	leases                  []time.Time
	dialErrs                []string
	pod                     string // the test pod, running on the node
	kubectl                 string // kubectl's binary
	proxy, logs, exec       tally  // requests the API server forwards to the kubelet
}

type certSeen struct {
	serial   string
	notAfter time.Time
	seen     time.Time
}

type certSeries []certSeen

// String is "[1a2b3c4d seen 12:30:01 until 12:40:00, …]" (UTC).
func (s certSeries) String() string {
	var parts []string
	for _, c := range s {
		parts = append(parts, fmt.Sprintf("%s seen %s until %s", c.serial,
			c.seen.UTC().Format("15:04:05"), c.notAfter.UTC().Format("15:04:05")))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (s *certSeries) add(c *x509.Certificate, at time.Time) {
	if c == nil {
		return
	}
	serial := shortSerial(c.SerialNumber)
	if len(*s) == 0 || (*s)[len(*s)-1].serial != serial {
		*s = append(*s, certSeen{serial: serial, notAfter: c.NotAfter, seen: at})
	}
}

func shortSerial(n *big.Int) string {
	s := n.Text(16)
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

// observe records the certificates on disk, the one the kubelet presents
// and the Lease's renewTime.
func (w *kubeletWatch) observe(ctx context.Context) {
	now := time.Now()
	w.client.add(currentLeaf(w.n, "kubelet-client"), now)
	w.serving.add(currentLeaf(w.n, "kubelet-server"), now)
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", w.addr, &tls.Config{RootCAs: w.roots})
	if err != nil {
		w.dialErrs = append(w.dialErrs, fmt.Sprintf("+%s: %v", now.Sub(w.start).Round(time.Second), err))
	} else {
		w.served.add(conn.ConnectionState().PeerCertificates[0], now)
		conn.Close()
	}
	lease, err := cp.Admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, w.n.name, metav1.GetOptions{})
	if err == nil && lease.Spec.RenewTime != nil {
		rt := lease.Spec.RenewTime.Time
		if len(w.leases) == 0 || rt.After(w.leases[len(w.leases)-1]) {
			w.leases = append(w.leases, rt)
		}
	}
}

// currentLeaf is the certificate in the node's <prefix>-current.pem, nil if
// there is none (read here, not with client-go's FileStore, which logs each
// load: the test polls every 2 seconds for 12 minutes).
func currentLeaf(n *node, prefix string) *x509.Certificate {
	data, err := os.ReadFile(filepath.Join(n.certDir, prefix+"-current.pem"))
	if err != nil {
		return nil
	}
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		if block.Type == "CERTIFICATE" {
			c, _ := x509.ParseCertificate(block.Bytes)
			return c
		}
	}
	return nil
}

// tally counts requests that reach the kubelet through the API server,
// which verifies its serving certificate against the cluster CA.
type tally struct {
	before int // successes before the first serving renewal
	after  int // and after the kubelet presented a renewed one
	errs   []string
}

func (t tally) String() string { return fmt.Sprintf("%d/%d/%d", t.before, t.after, len(t.errs)) }

// throughAPIServer asks the kubelet, through the API server, for /healthz
// (node proxy), the test pod's last log line (kubectl logs) and a command
// run in it (kubectl exec).
func (w *kubeletWatch) throughAPIServer(ctx context.Context) {
	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := cp.Admin.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", w.n.name, "proxy", "healthz").DoRaw(reqCtx)
	w.count(&w.proxy, string(body), err, func(out string) bool { return out == "ok" })
	out, err := exec.CommandContext(reqCtx, w.kubectl, "--kubeconfig", cp.AdminKubeconfig, "logs", "-n", "default", w.pod, "--tail=1").CombinedOutput()
	w.count(&w.logs, string(out), err, func(out string) bool { return strings.HasPrefix(out, "hello from "+w.n.name+" ") })
	out, err = exec.CommandContext(reqCtx, w.kubectl, "--kubeconfig", cp.AdminKubeconfig, "exec", "-n", "default", w.pod, "--", noderuntime.ImageBinary, "echo", "exec", "ok").CombinedOutput()
	w.count(&w.exec, string(out), err, func(out string) bool { return strings.TrimSpace(out) == "exec ok" })
}

func (w *kubeletWatch) count(t *tally, out string, err error, ok func(string) bool) {
	if err != nil || !ok(out) {
		t.errs = append(t.errs, fmt.Sprintf("+%s: %q %v", time.Since(w.start).Round(time.Second), out, err))
		return
	}
	switch {
	case len(w.serving) < 2:
		t.before++
	case len(w.served) > 0 && w.served[len(w.served)-1].serial != w.serving[0].serial:
		t.after++
	}
}

// startPod runs the test image on the node: a pod bound to it (no
// scheduler runs), its container printing "hello from NODE <n>" every
// second; it returns the pod's name once it is Running. The control plane
// runs no service-account controller, so the namespace's default
// ServiceAccount is made here; the pod mounts no token.
func startPod(ctx context.Context, t *testing.T, node string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_, err := cp.Admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	no, grace := false, int64(1)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "logger-" + node, Namespace: "default"},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "logger", Image: noderuntime.ImageName, ImagePullPolicy: corev1.PullNever,
				Args: []string{"log", "hello from", node},
			}},
		},
	}
	if _, err := cp.Admin.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Deleted while the kubelet still runs, so that it stops the
		// containers and tears the sandbox's network down.
		_ = cp.Admin.CoreV1().Pods("default").Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			if _, err := cp.Admin.CoreV1().Pods("default").Get(context.Background(), pod.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				return
			}
		}
	})
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		p, err := cp.Admin.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil && p.Status.Phase == corev1.PodRunning {
			return pod.Name, time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s not Running after 2 minutes: %v %+v", pod.Name, err, p.Status)
		}
	}
}

// servedSince is when the kubelet first presented serial.
func (w *kubeletWatch) servedSince(serial string) (time.Time, bool) {
	for _, s := range w.served {
		if s.serial == serial {
			return s.seen, true
		}
	}
	return time.Time{}, false
}

// maxLeaseGap is the longest time between successive Lease renewals seen,
// counting from the last one to now.
func (w *kubeletWatch) maxLeaseGap(now time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(w.leases); i++ {
		gap = max(gap, w.leases[i].Sub(w.leases[i-1]))
	}
	if len(w.leases) > 0 {
		gap = max(gap, now.Sub(w.leases[len(w.leases)-1]))
	}
	return gap
}

// startKubelet runs the kubelet with its log in a file; exited receives
// Wait's result. It is stopped when the test ends, before the container
// runtime.
func startKubelet(t *testing.T, bin string, args ...string) (cmd *exec.Cmd, logPath string, exited <-chan error) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), "kubelet.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // not left running by a killed test
	if err := controlplane.Spawn(cmd); err != nil {
		t.Fatal(err)
	}
	result, done := make(chan error, 1), make(chan struct{})
	go func() { result <- cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		controlplane.Terminate(cmd.Process, done, 10*time.Second)
		log.Close()
	})
	return cmd, logPath, result
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func internalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// klogTimes are the times of the klog lines of path that contain marker
// (klog's header, "I1123 04:44:48.123456", in local time and this year).
func klogTimes(path, marker string) []time.Time {
	data, _ := os.ReadFile(path)
	var out []time.Time
	for _, l := range strings.Split(string(data), "\n") {
		if !strings.Contains(l, marker) || len(l) < 21 {
			continue
		}
		at, err := time.ParseInLocation("0102 15:04:05.000000", l[1:21], time.Local)
		if err != nil {
			continue
		}
		out = append(out, at.AddDate(time.Now().Year(), 0, 0))
	}
	return out
}

func tailFile(path string, lines int) string {
	data, _ := os.ReadFile(path)
	l := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}
