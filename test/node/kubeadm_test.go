package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// kubeletUnit and kubeadmDropIn are kubelet.service as Kubernetes' kubelet
// package ships it and kubelet.service.d/10-kubeadm.conf as its kubeadm
// package ships it (both under /usr/lib/systemd/system).
const (
	kubeletUnit = `[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
`
	kubeadmDropIn = `# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment="KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf"
Environment="KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml"
# This is a file that "kubeadm init" and "kubeadm join" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-/etc/default/kubelet
ExecStart=
ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
`
	// criUnit runs the stand-in's fake container runtime where containerd's
	// socket is, for kubeadm's preflight and reset.
	criUnit = `[Unit]
Description=a fake container runtime on containerd's socket (kubelet-standin cri)

[Service]
ExecStart=/usr/local/bin/kubelet-standin cri unix:///run/containerd/containerd.sock

[Install]
WantedBy=multi-user.target
`
)

// kubeadmSetup is what the kubeadm node tests share: the kubeadm binary, the
// kubelet stand-in and the node suite's control plane prepared the kubeadm
// way (once: every join uses the same token).
var kubeadmSetup struct {
	once    sync.Once
	err     error
	kubeadm string // the real kubeadm, static
	standin string // test/cmd/kubelet-standin, static
	join    *controlplane.KubeadmJoin
}

func kubeadmCluster() (*controlplane.KubeadmJoin, error) {
	s := &kubeadmSetup
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "node: "+f+"\n", a...) }
		if s.kubeadm, s.err = controlplane.EnsureKubeadm(ctx, logf); s.err != nil {
			return
		}
		version, err := exec.CommandContext(ctx, s.kubeadm, "version", "-o", "short").Output()
		if err != nil {
			s.err = fmt.Errorf("kubeadm version: %w", err)
			return
		}
		if s.standin, s.err = buildStandin(ctx, strings.TrimSpace(string(version))); s.err != nil {
			return
		}
		s.join, s.err = cp.PrepareKubeadm(ctx, s.kubeadm)
	})
	return s.join, s.err
}

// buildStandin builds the kubelet stand-in (static, answering --version as
// the kubelet of version) into the test cache.
func buildStandin(ctx context.Context, version string) (string, error) {
	out := filepath.Join(cacheRoot, "kubelet-standin", "kubelet-standin")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	// Built aside and renamed: another run may be copying the last one.
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.kubernetesVersion="+version, "-o", tmp, "../cmd/kubelet-standin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the kubelet stand-in: %w\n%s", err, b)
	}
	return out, os.Rename(tmp, out)
}

// prepareKubeadmNode writes into a node's root what a node that joins with
// kubeadm has before certagent: kubeadm, the kubelet (the stand-in) with the
// kubelet and kubeadm packages' units, enabled, and the stand-in runtime.
func prepareKubeadmNode(t *testing.T, root string) {
	t.Helper()
	for src, dst := range map[string]string{kubeadmSetup.kubeadm: "usr/bin/kubeadm", kubeadmSetup.standin: "usr/local/bin/kubelet-standin"} {
		copyFile(t, src, filepath.Join(root, dst))
		if err := os.Chmod(filepath.Join(root, dst), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"usr/bin/kubelet": "/usr/local/bin/kubelet-standin",
		"etc/systemd/system/multi-user.target.wants/kubelet.service":    "/usr/lib/systemd/system/kubelet.service",
		"etc/systemd/system/multi-user.target.wants/containerd.service": "/etc/systemd/system/containerd.service",
	}
	for link, target := range links {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(root, link)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "usr/lib/systemd/system/kubelet.service"), kubeletUnit, 0o644)
	writeFile(t, filepath.Join(root, "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf"), kubeadmDropIn, 0o644)
	writeFile(t, filepath.Join(root, "etc/systemd/system/containerd.service"), criUnit, 0o644)
}

// kubeadmPatches is where certagent's package ships its kubeadm patch for the
// KubeletConfiguration, and kubeadmDropInPath where its kubeadm drop-in is
// shipped and where docs/kubeadm.md installs it.
const (
	kubeadmPatches     = "/usr/share/certagent/kubeadm/patches"
	kubeadmDropInSrc   = "/usr/share/certagent/kubeadm/20-certagent-kubeadm.conf"
	kubeadmDropInPath  = "/etc/systemd/system/kubelet.service.d/20-certagent-kubeadm.conf"
	preflightNoRuntime = "SystemVerification,FileContent--proc-sys-net-ipv4-ip_forward"
)

// startApprover approves the node's serving CSRs as they appear, standing in
// for the approver operators run (kubelet-csr-approver and the like), until
// the returned function is called.
func startApprover(t *testing.T, node string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if p := pendingServingCSR(node); p != "" {
				if err := cp.ApproveCSR(ctx, p); err == nil {
					t.Logf("approver: approved %s", p)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// csrCreates are the CSRs created since from, by the node's bootstrap token
// or by the node itself, with the program that sent each.
func csrCreates(t *testing.T, node, tokenID string, from time.Time) []controlplane.AuditEvent {
	t.Helper()
	evs, err := cp.AuditEvents(from, time.Now().Add(time.Second), func(ev controlplane.AuditEvent) bool {
		return ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Resource == "certificatesigningrequests" &&
			(ev.User.Username == "system:node:"+node || ev.User.Username == "system:bootstrap:"+tokenID)
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkCertagentMadeBothCSRs: since from, the node's client CSR (with the
// bootstrap token) and its serving CSR (with its new identity) were created,
// each once, and by certagent: no kubelet made a request.
func checkCertagentMadeBothCSRs(t *testing.T, node, tokenID string, from time.Time) {
	t.Helper()
	var client, serving int
	for _, ev := range csrCreates(t, node, tokenID, from) {
		if !strings.HasPrefix(ev.UserAgent, "certagent") {
			t.Errorf("a CSR was created by %q as %s, not by certagent", ev.UserAgent, ev.User.Username)
		}
		if ev.ResponseStatus == nil || ev.ResponseStatus.Code != 201 {
			continue
		}
		if ev.User.Username == "system:bootstrap:"+tokenID {
			client++
		} else {
			serving++
		}
	}
	if client != 1 || serving != 1 {
		t.Errorf("%d client and %d serving CSRs created, want one of each", client, serving)
	}
}

// checkKubeletOnCertagentFiles: the kubelet kubeadm configured runs with
// certagent's kubelet.conf and serving certificate and no way to obtain or
// rotate certificates itself, and the API server reaches it through that
// serving certificate (the node proxy, verified against the cluster CA).
func checkKubeletOnCertagentFiles(t *testing.T, c *container, node string) {
	t.Helper()
	conf := readFile(t, c.file("/var/lib/kubelet/config.yaml"))
	for _, want := range []string{
		"rotateCertificates: false", "serverTLSBootstrap: false",
		"tlsCertFile: /var/lib/kubelet/pki/kubelet-server-current.pem",
		"tlsPrivateKeyFile: /var/lib/kubelet/pki/kubelet-server-current.pem",
	} {
		if !strings.Contains(conf, "\n"+want+"\n") {
			t.Errorf("/var/lib/kubelet/config.yaml lacks %q:\n%s", want, conf)
		}
	}
	pid := c.show("kubelet", "MainPID")
	argv, _ := os.ReadFile(c.file("/proc/" + pid + "/cmdline"))
	args := strings.ReplaceAll(string(argv), "\x00", " ")
	if !strings.Contains(args, "--kubeconfig=/etc/kubernetes/kubelet.conf") || strings.Contains(args, "--bootstrap-kubeconfig") {
		t.Errorf("the kubelet runs as %q: want --kubeconfig=/etc/kubernetes/kubelet.conf and no --bootstrap-kubeconfig", args)
	}
	kubeconf := readFile(t, c.file("/etc/kubernetes/kubelet.conf"))
	if !strings.Contains(kubeconf, "client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem") {
		t.Errorf("kubelet.conf is not certagent's:\n%s", kubeconf)
	}
	if exists(c.file("/etc/kubernetes/bootstrap-kubelet.conf")) {
		t.Error("the bootstrap kubeconfig is still there")
	}
	var body []byte
	waitUntil(t, "the node proxy reaching the kubelet", 30*time.Second, func() bool {
		var err error
		body, err = cp.Admin.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes/" + node + "/proxy/healthz").DoRaw(context.Background())
		return err == nil && string(body) == "ok"
	})
}

func kubeadmJoinArgs(join *controlplane.KubeadmJoin) []string {
	return []string{"kubeadm", "join", join.Endpoint, "--token", join.Token, "--discovery-token-ca-cert-hash", join.CACertHash,
		"--patches", kubeadmPatches, "--ignore-preflight-errors", preflightNoRuntime}
}

// TestKubeadmJoin runs the real `kubeadm join` on a real systemd node with
// certagent's package and its kubeadm patch and drop-in, against the node
// suite's control plane prepared by kubeadm's own init phases: with an
// approver the join completes unattended, certagent makes both CSRs and the
// kubelet (the stand-in, see test/cmd/kubelet-standin) runs on its files;
// kubeadm join on a joined node refuses and changes nothing; kubeadm reset and
// a new join give a working node again; without an approver the join fails
// saying where to look, which names the CSR to approve, and once it is
// approved the kubelet starts and the join's last phase, run again, passes.
func TestKubeadmJoin(t *testing.T) {
	join, err := kubeadmCluster()
	if err != nil {
		t.Fatal(err)
	}
	tokenID, _, _ := strings.Cut(join.Token, ".")
	name := fmt.Sprintf("ca-kubeadm-%d", time.Now().UnixNano()%1000000)
	c := boot(t, rootfs, name, func(root string) {
		seed := filepath.Join(root, "var/lib/cloud/seed/nocloud")
		writeFile(t, filepath.Join(seed, "meta-data"), "instance-id: "+name+"\nlocal-hostname: "+name+"\n", 0o644)
		writeFile(t, filepath.Join(seed, "user-data"), "#cloud-config\nlocale: false\n", 0o600)
		copyFile(t, deb, filepath.Join(root, "root/dist", filepath.Base(deb)))
		prepareKubeadmNode(t, root)
	})
	kubeadm := func(timeout time.Duration, args ...string) (string, error, time.Duration) {
		start := time.Now()
		out, err := c.exec(timeout, args...)
		return out, err, time.Since(start)
	}

	t.Run("certagent's package and its kubeadm drop-in are installed", func(t *testing.T) {
		c.must("dpkg", "-i", "/root/dist/"+filepath.Base(deb))
		c.must("install", "-D", "-m", "0644", kubeadmDropInSrc, kubeadmDropInPath)
		c.must("systemctl", "daemon-reload")
	})

	approver := startApprover(t, name)
	t.Run("kubeadm join completes with an approver running", func(t *testing.T) {
		from := time.Now()
		out, err, took := kubeadm(6*time.Minute, kubeadmJoinArgs(join)...)
		if err != nil || !strings.Contains(out, "This node has joined the cluster") {
			journal, _ := c.exec(time.Minute, "journalctl", "--no-pager", "-n", "60", "-u", "kubelet", "-u", "certagent")
			t.Fatalf("kubeadm join: %v after %s\n%s\n%s", err, took.Round(time.Millisecond), out, journal)
		}
		t.Logf("kubeadm join completed in %s:\n%s", took.Round(time.Millisecond), out)
		checkCertagentMadeBothCSRs(t, name, tokenID, from)
		checkKubeletOnCertagentFiles(t, c, name)
	})

	t.Run("kubeadm join on a joined node refuses and changes nothing", func(t *testing.T) {
		client := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem")
		serving := linkTarget(c, "/var/lib/kubelet/pki/kubelet-server-current.pem")
		kubeconf := readFile(t, c.file("/etc/kubernetes/kubelet.conf"))
		pids := c.show("certagent", "MainPID") + " " + c.show("kubelet", "MainPID")
		from := time.Now()
		out, err, _ := kubeadm(2*time.Minute, kubeadmJoinArgs(join)...)
		if err == nil || !strings.Contains(out, "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already exists") {
			t.Fatalf("kubeadm join on a joined node: %v\n%s", err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "[ERROR ") {
				t.Logf("refused: %s", strings.TrimSpace(l))
			}
		}
		if linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem") != client || linkTarget(c, "/var/lib/kubelet/pki/kubelet-server-current.pem") != serving ||
			readFile(t, c.file("/etc/kubernetes/kubelet.conf")) != kubeconf {
			t.Error("the refused join changed the certificates or kubelet.conf")
		}
		if got := c.show("certagent", "MainPID") + " " + c.show("kubelet", "MainPID"); got != pids {
			t.Errorf("certagent and kubelet pids %s -> %s", pids, got)
		}
		if exists(c.file("/etc/kubernetes/bootstrap-kubelet.conf")) {
			t.Error("the refused join left a bootstrap kubeconfig")
		}
		if evs := csrCreates(t, name, tokenID, from); len(evs) != 0 {
			t.Errorf("the refused join made %d CSRs", len(evs))
		}
	})

	// kubeadm reset, then what kubeadm's documentation says to do on the
	// control plane: delete the Node (its Ready status would make the next
	// join refuse the name).
	reset := func(t *testing.T) {
		t.Helper()
		out, err, took := kubeadm(2*time.Minute, "kubeadm", "reset", "--force")
		if err != nil {
			t.Fatalf("kubeadm reset: %v\n%s", err, out)
		}
		t.Logf("kubeadm reset in %s", took.Round(time.Millisecond))
		if err := cp.Admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("kubeadm reset then kubeadm join give a working node again", func(t *testing.T) {
		oldClient := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem")
		reset(t)
		for _, p := range []string{"/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/pki/kubelet-client-current.pem", "/var/lib/kubelet/pki/kubelet-server-current.pem", "/var/lib/kubelet/config.yaml"} {
			if exists(c.file(p)) {
				t.Errorf("%s is still there after kubeadm reset", p)
			}
		}
		if s := c.show("kubelet", "ActiveState"); s != "inactive" {
			t.Errorf("kubelet %s after kubeadm reset", s)
		}
		// certagent notices that its files were removed.
		took := waitUntil(t, "certagent waiting for a bootstrap kubeconfig", 30*time.Second, func() bool {
			return strings.HasPrefix(c.show("certagent", "StatusText"), "waiting for a bootstrap kubeconfig")
		})
		t.Logf("certagent says %q %s after the reset", c.show("certagent", "StatusText"), took.Round(time.Millisecond))
		from := time.Now()
		out, err, took := kubeadm(6*time.Minute, kubeadmJoinArgs(join)...)
		if err != nil || !strings.Contains(out, "This node has joined the cluster") {
			journal, _ := c.exec(time.Minute, "journalctl", "--no-pager", "-n", "60", "-u", "kubelet", "-u", "certagent")
			t.Fatalf("kubeadm join after reset: %v after %s\n%s\n%s", err, took.Round(time.Millisecond), out, journal)
		}
		t.Logf("kubeadm join after kubeadm reset completed in %s", took.Round(time.Millisecond))
		if got := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem"); got == "" || got == oldClient {
			t.Errorf("client certificate %q after the new join (was %q)", got, oldClient)
		}
		checkCertagentMadeBothCSRs(t, name, tokenID, from)
		checkKubeletOnCertagentFiles(t, c, name)
	})

	t.Run("without an approver the join fails, pointing at where the CSR to approve is named", func(t *testing.T) {
		approver()
		reset(t)
		// As an operator would shorten kubeadm's 4-minute wait for the
		// kubelet: a JoinConfiguration with the same discovery and patches.
		config := fmt.Sprintf(`apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: %s
    token: %s
    caCertHashes: [%s]
patches:
  directory: %s
nodeRegistration:
  ignorePreflightErrors: [%s]
timeouts:
  kubeletHealthCheck: 15s
`, join.Endpoint, join.Token, join.CACertHash, kubeadmPatches, preflightNoRuntime)
		writeFile(t, c.file("/root/join.yaml"), config, 0o600)
		// 60 s of certagent wait (the drop-in's bound) and kubeadm's 15 s.
		out, err, took := kubeadm(3*time.Minute, "kubeadm", "join", "--config", "/root/join.yaml")
		if took >= 3*time.Minute {
			ps, _ := c.exec(30*time.Second, "ps", "-eo", "pid,etime,args")
			t.Fatalf("kubeadm join without an approver still runs after %s (a restart of the kubelet waiting for its ExecStartPre?):\n%s\n%s", took.Round(time.Second), out, ps)
		}
		if err == nil {
			t.Fatalf("kubeadm join without an approver succeeded after %s:\n%s", took.Round(time.Millisecond), out)
		}
		t.Logf("kubeadm join failed after %s:\n%s", took.Round(time.Millisecond), out)
		if !strings.Contains(out, "'systemctl status kubelet'") {
			t.Errorf("kubeadm's failure does not point at systemctl status kubelet")
		}
		pending := pendingServingCSR(name)
		if pending == "" {
			t.Fatal("no pending serving CSR")
		}
		status, _ := c.exec(30*time.Second, "systemctl", "status", "--no-pager", "kubelet")
		if !strings.Contains(status, "kubectl certificate approve "+pending) {
			t.Errorf("systemctl status kubelet does not name the CSR to approve (%s):\n%s", pending, status)
		}
		t.Logf("systemctl status kubelet:\n%s", status)
		if exists(c.file("/etc/kubernetes/bootstrap-kubelet.conf")) {
			t.Error("the failed join left the bootstrap kubeconfig")
		}

		// Approved after the failure, the kubelet starts by itself (its unit
		// tries again every 70 s at most) and the node works: nothing was
		// left for the join to do.
		if err := cp.ApproveCSR(context.Background(), pending); err != nil {
			t.Fatal(err)
		}
		took = waitUntil(t, "the kubelet started after the approval", 90*time.Second, func() bool {
			return c.show("kubelet", "ActiveState") == "active"
		})
		t.Logf("the kubelet started by itself %s after the approval", took.Round(time.Millisecond))
		checkKubeletOnCertagentFiles(t, c, name)
	})

	t.Run("a retried join (kubeadm reset, kubeadm join) completes once its CSR is approved", func(t *testing.T) {
		reset(t)
		from := time.Now()
		type result struct {
			out  string
			err  error
			took time.Duration
		}
		done := make(chan result, 1)
		go func() {
			out, err, took := kubeadm(6*time.Minute, kubeadmJoinArgs(join)...)
			done <- result{out, err, took}
		}()
		// A person approves the CSR the node names (no approver runs).
		csr := servingCSR(t, name)
		waitUntil(t, "systemctl status kubelet naming "+csr, 10*time.Second, func() bool {
			status, _ := c.exec(30*time.Second, "systemctl", "status", "--no-pager", "kubelet")
			return strings.Contains(status, "kubectl certificate approve "+csr)
		})
		if err := cp.ApproveCSR(context.Background(), csr); err != nil {
			t.Fatal(err)
		}
		approved := time.Now()
		r := <-done
		if r.err != nil || !strings.Contains(r.out, "This node has joined the cluster") {
			t.Fatalf("the retried join: %v after %s\n%s", r.err, r.took.Round(time.Millisecond), r.out)
		}
		t.Logf("the retried join completed %s after the approval (%s in all)", time.Since(approved).Round(time.Millisecond), r.took.Round(time.Millisecond))
		checkCertagentMadeBothCSRs(t, name, tokenID, from)
		checkKubeletOnCertagentFiles(t, c, name)
	})

	t.Run("no kubelet ever made a CSR", func(t *testing.T) {
		evs, err := cp.AuditEvents(time.Time{}, time.Now().Add(time.Second), func(ev controlplane.AuditEvent) bool {
			return ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Resource == "certificatesigningrequests" && !strings.HasPrefix(ev.UserAgent, "certagent")
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			t.Errorf("CSR created by %q as %s", ev.UserAgent, ev.User.Username)
		}
	})
}
