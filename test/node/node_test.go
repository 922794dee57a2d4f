package node

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// userData is the example from packaging/cloud-init with the values an
// operator fills in (userDataFrom).
func userData(t *testing.T, token, debName string) string {
	t.Helper()
	return userDataFrom(t, "user-data.yaml", debName, map[string]string{"REPLACE_BOOTSTRAP_TOKEN": token})
}

// userDataFrom is the example packaging/cloud-init/<example> with the API
// server's URL, the cluster CA and values filled in, the package installed
// from the file the test copies in instead of a package repository, and the
// locale module off (a minbase root file system has no locales).
func userDataFrom(t *testing.T, example, debName string, values map[string]string) string {
	t.Helper()
	data, err := os.ReadFile("../../packaging/cloud-init/" + example)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	values["REPLACE_API_SERVER_URL"] = cp.URL
	values["REPLACE_CA_DATA"] = base64.StdEncoding.EncodeToString(cp.CACertPEM)
	values["[apt-get, install, -y, certagent]"] = "[dpkg, -i, /root/dist/" + debName + "]"
	for old, new := range values {
		if !strings.Contains(s, old) {
			t.Fatalf("the example %s lacks %q", example, old)
		}
		s = strings.ReplaceAll(s, old, new)
	}
	return s + "locale: false\n"
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// servingCSR waits for the node's serving CSR.
func servingCSR(t *testing.T, node string) string {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list.Items {
			if c.Spec.SignerName == certificatesv1.KubeletServingSignerName && c.Spec.Username == "system:node:"+node && len(c.Status.Conditions) == 0 {
				return c.Name
			}
		}
	}
	t.Fatalf("no pending serving CSR from system:node:%s", node)
	return ""
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return time.Since(start)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func linkTarget(c *container, p string) string {
	target, _ := os.Readlink(c.file(p))
	return target
}

// TestNodeWithCloudInit is an operator's whole path on a real systemd:
// cloud-init writes the bootstrap kubeconfig and installs the package, the
// service bootstraps and reports through systemd, and the package upgrades,
// reloads, restarts on a hung agent and is removed without losing certificates.
func TestNodeWithCloudInit(t *testing.T) {
	token, err := cp.CreateBootstrapToken(context.Background(), controlplaneAutoApprove())
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("ca-node-%d", time.Now().UnixNano()%1000000)
	debName := filepath.Base(deb)
	c := boot(t, rootfs, name, func(root string) {
		seed := filepath.Join(root, "var/lib/cloud/seed/nocloud")
		writeFile(t, filepath.Join(seed, "meta-data"), "instance-id: "+name+"\nlocal-hostname: "+name+"\n", 0o644)
		writeFile(t, filepath.Join(seed, "user-data"), userData(t, token, debName), 0o600)
		copyFile(t, deb, filepath.Join(root, "root/dist", debName))
		copyFile(t, debNewer, filepath.Join(root, "root/dist/newer", filepath.Base(debNewer)))
		// A stand-in kubelet, to check the drop-in's ordering: it notes what
		// was on disk when it started.
		writeFile(t, filepath.Join(root, "etc/systemd/system/kubelet.service"), "[Service]\nExecStart=/bin/sh -c 'ls -L /etc/kubernetes/kubelet.conf /var/lib/kubelet/pki/kubelet-server-current.pem >/run/kubelet-started 2>&1; exec sleep infinity'\n", 0o644)
	})

	t.Run("cloud-init installs the package and certagent becomes ready", func(t *testing.T) {
		out, _ := c.exec(5*time.Minute, "cloud-init", "status", "--wait", "--long")
		if !strings.Contains(out, "status: done") {
			log, _ := c.exec(time.Minute, "tail", "-50", "/var/log/cloud-init-output.log")
			t.Fatalf("cloud-init: %s\n%s", out, log)
		}
		took := waitUntil(t, "certagent active (running)", time.Minute, func() bool {
			return c.show("certagent", "ActiveState") == "active" && c.show("certagent", "SubState") == "running"
		})
		t.Logf("certagent active (running) %s after cloud-init finished", took.Round(time.Millisecond))
		if fi, err := os.Stat(c.file("/etc/kubernetes/kubelet.conf")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("kubelet.conf: %v %v", fi, err)
		}
		if exists(c.file("/etc/kubernetes/bootstrap-kubelet.conf")) {
			t.Error("the bootstrap kubeconfig is still there")
		}
		if !strings.HasPrefix(linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem"), "kubelet-client-") {
			t.Fatal("no client certificate")
		}
		if fi, err := os.Stat(c.file("/var/lib/kubelet/pki")); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("/var/lib/kubelet/pki: %v %v, want 0700", fi, err)
		}
		if got := c.show("certagent", "UnitFileState"); got != "enabled" {
			t.Errorf("certagent is %s, want enabled", got)
		}
	})

	var csr string
	t.Run("systemctl status shows what certagent waits for", func(t *testing.T) {
		csr = servingCSR(t, name)
		want := "serving: waiting for approval of " + csr + " (kubectl certificate approve " + csr + ")"
		waitUntil(t, "STATUS line", 30*time.Second, func() bool { return strings.Contains(c.show("certagent", "StatusText"), want) })
		out, _ := c.exec(30*time.Second, "systemctl", "status", "--no-pager", "certagent")
		if !strings.Contains(out, "Status: \"client valid until ") || !strings.Contains(out, want) {
			t.Fatalf("systemctl status lacks the STATUS line:\n%s", out)
		}
		t.Logf("systemctl status:\n%s", out)
	})

	t.Run("the kubelet waits for its serving certificate", func(t *testing.T) {
		// Started while the serving CSR is pending, the kubelet stays in
		// its ExecStartPre (certagent wait) and has not run.
		if out, err := c.exec(30*time.Second, "systemctl", "start", "--no-block", "kubelet"); err != nil {
			t.Fatalf("systemctl start kubelet: %v\n%s", err, out)
		}
		waitUntil(t, "kubelet activating (start-pre)", 30*time.Second, func() bool {
			return c.show("kubelet", "ActiveState") == "activating" && c.show("kubelet", "SubState") == "start-pre"
		})
		time.Sleep(3 * time.Second)
		if st := c.show("kubelet", "ActiveState"); st != "activating" || exists(c.file("/run/kubelet-started")) {
			t.Fatalf("the kubelet started (%s) without a serving certificate", st)
		}
		out, _ := c.exec(30*time.Second, "journalctl", "-u", "kubelet", "--no-pager")
		if !strings.Contains(out, "certagent wait: waiting: no valid serving certificate for this node in /var/lib/kubelet/pki/kubelet-server-current.pem") {
			t.Errorf("the kubelet's journal does not say what it waits for:\n%s", out)
		}
	})

	t.Run("the approved serving certificate appears", func(t *testing.T) {
		if err := cp.ApproveCSR(context.Background(), csr); err != nil {
			t.Fatal(err)
		}
		took := waitUntil(t, "kubelet-server-current.pem", 30*time.Second, func() bool {
			return strings.HasPrefix(linkTarget(c, "/var/lib/kubelet/pki/kubelet-server-current.pem"), "kubelet-server-")
		})
		t.Logf("serving certificate on disk %s after approval", took.Round(time.Millisecond))
		waitUntil(t, "STATUS serving valid", 10*time.Second, func() bool {
			return strings.Contains(c.show("certagent", "StatusText"), "; serving: valid until ")
		})
		took = waitUntil(t, "kubelet active", 30*time.Second, func() bool { return c.show("kubelet", "ActiveState") == "active" })
		t.Logf("kubelet started %s after the serving certificate was stored", took.Round(time.Millisecond))
		waitUntil(t, "/run/kubelet-started", 10*time.Second, func() bool { return exists(c.file("/run/kubelet-started")) })
		if seen, _ := os.ReadFile(c.file("/run/kubelet-started")); strings.Contains(string(seen), "No such file") || !strings.Contains(string(seen), "kubelet-server-current.pem") {
			t.Errorf("at its start the kubelet saw:\n%s", seen)
		}
	})

	t.Run("the kubelet drop-in orders kubelet after certagent", func(t *testing.T) {
		if after := c.show("kubelet", "After"); !strings.Contains(after, "certagent.service") {
			t.Errorf("kubelet.service After=%s", after)
		}
		if wants := c.show("kubelet", "Wants"); !strings.Contains(wants, "certagent.service") {
			t.Errorf("kubelet.service Wants=%s", wants)
		}
		if pre := c.show("kubelet", "ExecStartPre"); !strings.Contains(pre, "/usr/bin/certagent ; argv[]=/usr/bin/certagent wait ") {
			t.Errorf("kubelet.service ExecStartPre=%s", pre)
		}
	})

	t.Run("the installed unit starts certagent on one processor", func(t *testing.T) {
		pid := c.show("certagent", "MainPID")
		environ, err := os.ReadFile(c.file("/proc/" + pid + "/environ"))
		if err != nil {
			t.Fatal(err)
		}
		if vars := strings.Split(string(environ), "\x00"); !slices.Contains(vars, "GOMAXPROCS=1") {
			t.Errorf("certagent (PID %s) runs with the environment %q, without GOMAXPROCS=1", pid, vars)
		}
	})

	t.Run("systemctl reload applies the new configuration and renews nothing", func(t *testing.T) {
		client := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem")
		pid := c.show("certagent", "MainPID")
		writeFile(t, c.file("/etc/certagent/config.d/50-node-test.yaml"),
			"apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nserving:\n  dnsNames: ["+name+".example]\n", 0o644)
		c.must("systemctl", "reload", "certagent")
		// The serving certificate no longer covers the names: one new CSR.
		pending := servingCSR(t, name) // the one before was approved: this is the new request
		if err := cp.ApproveCSR(context.Background(), pending); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the serving certificate with the new name", 30*time.Second, func() bool {
			return strings.Contains(c.must("certagent", "status"), name+".example")
		})
		if got := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem"); got != client {
			t.Errorf("the reload renewed the client certificate (%s -> %s)", client, got)
		}
		if got := c.show("certagent", "MainPID"); got != pid {
			t.Errorf("the reload restarted the service (pid %s -> %s)", pid, got)
		}
		journal := c.must("journalctl", "-u", "certagent", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, `reload: configuration applied	{"changed": ["serving.dnsNames"]}`) {
			t.Errorf("the journal does not say what the reload changed:\n%s", tail([]byte(journal), 2000))
		}
		csr = pending
	})

	t.Run("certagent renew --force has the running service renew", func(t *testing.T) {
		client := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem")
		pid := c.show("certagent", "MainPID")
		time.Sleep(1100 * time.Millisecond) // dated file names have one-second resolution
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { // the forced serving renewal waits for approval
			for ctx.Err() == nil {
				if p := pendingServingCSR(name); p != "" {
					_ = cp.ApproveCSR(ctx, p)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
		out := c.must("certagent", "renew", "--force", "--timeout", "60s")
		if !strings.Contains(out, "the running certagent daemon did the work") || !strings.Contains(out, "client: renewed") || !strings.Contains(out, "server: renewed") {
			t.Fatalf("renew --force:\n%s", out)
		}
		if got := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem"); got == client {
			t.Error("renew --force did not renew the client certificate")
		}
		if got := c.show("certagent", "MainPID"); got != pid {
			t.Errorf("the service restarted (pid %s -> %s)", pid, got)
		}
	})

	t.Run("systemctl stop is clean and quick", func(t *testing.T) {
		start := time.Now()
		c.must("systemctl", "stop", "certagent")
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("stop took %s", took)
		}
		if r := c.show("certagent", "Result"); r != "success" {
			t.Errorf("Result=%s after stop", r)
		}
		c.must("systemctl", "start", "certagent")
		if s := c.show("certagent", "ActiveState"); s != "active" {
			t.Fatalf("ActiveState=%s after start", s)
		}
	})

	t.Run("systemd-analyze", func(t *testing.T) {
		out, err := c.exec(time.Minute, "systemd-analyze", "verify", "/usr/lib/systemd/system/certagent.service")
		if err != nil || strings.Contains(out, "certagent") {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		out, _ = c.exec(time.Minute, "systemd-analyze", "security", "--no-pager", "certagent.service")
		m := regexp.MustCompile(`Overall exposure level for certagent.service: ([0-9.]+) (\S+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security:\n%s", out)
		}
		score, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("systemd-analyze security certagent.service: %s %s", m[1], m[2])
		if score >= 5 {
			t.Errorf("exposure %s %s: want the OK band or better", m[1], m[2])
		}
	})

	t.Run("the watchdog restarts a hung agent", func(t *testing.T) {
		pid := c.show("certagent", "MainPID")
		restarts := c.show("certagent", "NRestarts")
		c.must("kill", "-STOP", pid)
		took := waitUntil(t, "a restart by the watchdog", 90*time.Second, func() bool {
			return c.show("certagent", "MainPID") != pid && c.show("certagent", "ActiveState") == "active" && c.show("certagent", "SubState") == "running"
		})
		if got := c.show("certagent", "NRestarts"); got == restarts {
			t.Errorf("NRestarts still %s", got)
		}
		journal, _ := c.exec(time.Minute, "journalctl", "-u", "certagent", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, "Watchdog timeout") {
			t.Errorf("the journal does not mention the watchdog:\n%s", tail([]byte(journal), 2000))
		}
		t.Logf("restarted %s after SIGSTOP", took.Round(time.Millisecond))
	})

	t.Run("the watchdog restarts an agent whose worker is stuck in a step", func(t *testing.T) {
		// A build that hangs the first time a worker prepares a request, and
		// calls a worker stuck after 5 s (instead of minutes): the main loop
		// stays alive, only the worker is stuck.
		copyFile(t, failpointBin, c.file("/usr/local/bin/certagent-failpoints"))
		if err := os.Chmod(c.file("/usr/local/bin/certagent-failpoints"), 0o755); err != nil {
			t.Fatal(err)
		}
		dropIn := c.file("/etc/systemd/system/certagent.service.d/50-hang.conf")
		writeFile(t, dropIn, "[Service]\nExecStart=\nExecStart=/usr/local/bin/certagent-failpoints run\n"+
			"Environment=CERTAGENT_FAILPOINT=obtain.key-ready:1:hang CERTAGENT_HUNG_AFTER=5s\n", 0o644)
		defer func() {
			_ = os.Remove(dropIn)
			c.must("systemctl", "daemon-reload")
			c.must("systemctl", "restart", "certagent")
		}()
		c.must("systemctl", "daemon-reload")
		c.must("systemctl", "restart", "certagent")
		waitUntil(t, "certagent running the failpoint build", 30*time.Second, func() bool {
			return c.show("certagent", "ActiveState") == "active" && c.show("certagent", "SubState") == "running"
		})
		pid := c.show("certagent", "MainPID")
		restarts := c.show("certagent", "NRestarts")
		// A forced renewal makes the client worker prepare a request: it hangs there.
		go func() { _, _ = c.exec(2*time.Minute, "certagent", "renew", "--force", "--timeout", "90s") }()
		took := waitUntil(t, "a restart by the watchdog", 90*time.Second, func() bool {
			return c.show("certagent", "MainPID") != pid && c.show("certagent", "NRestarts") != restarts
		})
		journal, _ := c.exec(time.Minute, "journalctl", "-u", "certagent", "--no-pager", "-o", "cat")
		for _, want := range []string{"a worker is stuck: not telling the watchdog", "Watchdog timeout"} {
			if !strings.Contains(journal, want) {
				t.Errorf("the journal lacks %q:\n%s", want, tail([]byte(journal), 3000))
			}
		}
		t.Logf("a worker stuck in a step: restarted %s after the forced renewal", took.Round(time.Millisecond))
	})

	t.Run("upgrading keeps the certificates and restarts the service", func(t *testing.T) {
		client := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem")
		kubeconf := readFile(t, c.file("/etc/kubernetes/kubelet.conf"))
		pid := c.show("certagent", "MainPID")
		c.must("dpkg", "-i", "/root/dist/newer/"+filepath.Base(debNewer))
		waitUntil(t, "the restarted service", time.Minute, func() bool {
			return c.show("certagent", "MainPID") != pid && c.show("certagent", "ActiveState") == "active"
		})
		if got := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem"); got != client {
			t.Errorf("client certificate %s -> %s across the upgrade", client, got)
		}
		if readFile(t, c.file("/etc/kubernetes/kubelet.conf")) != kubeconf {
			t.Error("kubelet.conf changed across the upgrade")
		}
		if v := c.must("dpkg-query", "-W", "-f=${Version}", "certagent"); !strings.Contains(filepath.Base(debNewer), v) {
			t.Errorf("installed version %s, want the newer package", v)
		}
	})

	t.Run("the journal holds neither the token secret nor key material", func(t *testing.T) {
		journal := c.must("journalctl", "--no-pager", "-o", "cat")
		_, secret, _ := strings.Cut(token, ".")
		if strings.Contains(journal, secret) {
			t.Error("the journal contains the bootstrap token secret")
		}
		if strings.Contains(journal, "PRIVATE KEY") {
			t.Error("the journal contains private key material")
		}
		if !strings.Contains(journal, "certificate stored") {
			t.Fatal("the journal has no certagent lines: the check would prove nothing")
		}
	})

	t.Run("removing and purging the package keep the certificates", func(t *testing.T) {
		c.must("dpkg", "-r", "certagent")
		if s := c.show("certagent", "ActiveState"); s == "active" {
			t.Error("certagent still active after removal")
		}
		for _, p := range []string{"/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/pki/kubelet-client-current.pem", "/var/lib/kubelet/pki/kubelet-server-current.pem"} {
			if !exists(c.file(p)) {
				t.Errorf("%s removed with the package", p)
			}
		}
		c.must("dpkg", "-P", "certagent")
		for _, p := range []string{"/etc/kubernetes/kubelet.conf", "/var/lib/kubelet/pki/kubelet-client-current.pem"} {
			if !exists(c.file(p)) {
				t.Errorf("%s removed by purge", p)
			}
		}
		if exists(c.file("/usr/bin/certagent")) || exists(c.file("/etc/certagent/config.yaml")) {
			t.Error("purge left the binary or the config")
		}
	})
}

// pendingServingCSR names the node's serving CSR that waits for approval ("" if none).
func pendingServingCSR(node string) string {
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return ""
	}
	for _, c := range list.Items {
		if c.Spec.SignerName == certificatesv1.KubeletServingSignerName && len(c.Status.Conditions) == 0 && c.Spec.Username == "system:node:"+node {
			return c.Name
		}
	}
	return ""
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestRPMOnSystemd installs the rpm with its scriptlets (Debian's rpm, on a
// real systemd): the service is enabled and started, the certificate
// directory is created 0700, an upgrade restarts it, and erasing stops and
// disables it and keeps the certificate directory.
func TestRPMOnSystemd(t *testing.T) {
	name := fmt.Sprintf("ca-rpm-%d", time.Now().UnixNano()%1000000)
	c := boot(t, rootfs, name, func(root string) {
		writeFile(t, filepath.Join(root, "var/lib/cloud/seed/nocloud/meta-data"), "instance-id: "+name+"\nlocal-hostname: "+name+"\n", 0o644)
		writeFile(t, filepath.Join(root, "var/lib/cloud/seed/nocloud/user-data"), "#cloud-config\nlocale: false\n", 0o600)
		copyFile(t, rpmPkg, filepath.Join(root, "root/certagent.rpm"))
		copyFile(t, rpmNewer, filepath.Join(root, "root/certagent-newer.rpm"))
	})
	waitUntil(t, "systemd up", time.Minute, func() bool {
		out, _ := c.exec(10*time.Second, "systemctl", "is-system-running")
		return strings.Contains(out, "running") || strings.Contains(out, "degraded")
	})
	// --nodeps: Debian's rpm database knows none of the packages the rpm needs.
	// No bootstrap kubeconfig yet, so certagent does not send READY: the
	// scriptlet must not wait for it (it used to hang the installer).
	rpmMust := func(args ...string) {
		t.Helper()
		start := time.Now()
		out, err := c.exec(60*time.Second, args...)
		if err != nil {
			t.Fatalf("%s: %v after %s (a scriptlet waiting for the service?)\n%s", strings.Join(args, " "), err, time.Since(start).Round(time.Second), out)
		}
		t.Logf("%s: %s", strings.Join(args, " "), time.Since(start).Round(10*time.Millisecond))
	}
	rpmMust("rpm", "-i", "--nodeps", "/root/certagent.rpm")
	if got := c.show("certagent", "UnitFileState"); got != "enabled" {
		t.Errorf("after rpm -i certagent is %s, want enabled (the postinstall scriptlet)", got)
	}
	// Started, and waiting (Type=notify: "activating" until the API server
	// accepts kubelet.conf).
	running := func() bool {
		s := c.show("certagent", "ActiveState")
		return (s == "activating" || s == "active") && c.show("certagent", "MainPID") != "0"
	}
	waitUntil(t, "certagent started by the scriptlet", 30*time.Second, running)
	for start := time.Now(); !strings.HasPrefix(c.show("certagent", "StatusText"), "waiting for a bootstrap kubeconfig at /etc/kubernetes/bootstrap-kubelet.conf"); time.Sleep(200 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			out, _ := c.exec(10*time.Second, "systemctl", "status", "--no-pager", "certagent")
			journal, _ := c.exec(10*time.Second, "journalctl", "--no-pager", "-u", "certagent")
			t.Fatalf("STATUS %q, want waiting for a bootstrap kubeconfig\n%s\n%s", c.show("certagent", "StatusText"), out, journal)
		}
	}
	if fi, err := os.Stat(c.file("/var/lib/kubelet/pki")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("/var/lib/kubelet/pki: %v %v, want 0700", fi, err)
	}
	pid := c.show("certagent", "MainPID")
	rpmMust("rpm", "-U", "--nodeps", "/root/certagent-newer.rpm")
	waitUntil(t, "the service restarted by the upgrade", 30*time.Second, func() bool {
		return c.show("certagent", "MainPID") != pid && running()
	})
	if got := c.show("certagent", "UnitFileState"); got != "enabled" {
		t.Errorf("after rpm -U certagent is %s, want still enabled", got)
	}
	rpmMust("rpm", "-e", "certagent")
	if s := c.show("certagent", "ActiveState"); s == "active" || s == "activating" {
		t.Error("certagent still active after rpm -e (the preuninstall scriptlet)")
	}
	if exists(c.file("/usr/bin/certagent")) || exists(c.file("/usr/lib/systemd/system/certagent.service")) {
		t.Error("rpm -e left the binary or the unit")
	}
	if !exists(c.file("/var/lib/kubelet/pki")) {
		t.Error("rpm -e removed the certificate directory")
	}
}
