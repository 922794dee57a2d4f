package node

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/test/clusterside"
)

// attestationUserData is packaging/cloud-init/user-data-attestation.yaml
// filled in (userDataFrom); it must then hold no placeholder, and name no
// token and no bootstrap kubeconfig.
func attestationUserData(t *testing.T, svcURL, caHash, debName string) string {
	t.Helper()
	s := userDataFrom(t, "user-data-attestation.yaml", debName, map[string]string{
		"REPLACE_ATTESTATION_URL":     svcURL,
		"REPLACE_ATTESTATION_CA_HASH": caHash,
	})
	var content []string // the user-data without its comments
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			content = append(content, l)
		}
	}
	if c := strings.Join(content, "\n"); strings.Contains(c, "REPLACE_") || strings.Contains(strings.ToLower(c), "token") || strings.Contains(c, "bootstrap") {
		t.Fatalf("the filled attestation user-data still has a placeholder or names a token or a bootstrap kubeconfig:\n%s", s)
	}
	return s
}

// enrolWithThePackage runs the packaged `certagent attest enroll` on the
// host against the node's TPM (as from an inventory, before the node boots)
// and applies what it prints with kubectl, then waits until the service's
// cache holds the record.
func enrolWithThePackage(t *testing.T, cl *clusterside.Cluster, svc *clusterside.Service, tpm *swtpm.TPM, name string) {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nnodeName: "+name+"\n", 0o600)
	rec, err := exec.Command(filepath.Join(dir, "usr/bin/certagent"), "attest", "enroll", "--config", cfg, "--tpm", tpm.Path()).Output()
	if err != nil {
		t.Fatalf("certagent attest enroll: %v\n%s", err, rec)
	}
	if out, err := cl.KubectlCmd(context.Background(), string(rec), "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply -f - (the enrollment): %v\n%s", err, out)
	}
	waitUntil(t, "the service's cache holds the enrollment", 30*time.Second, func() bool {
		n, _ := svc.Metric("certagent_attestation_enrollments")
		return n == 1
	})
}

// csrsOf are every CSR the node's name is on: requested by it or for it
// (a CSR the attestation service made is annotated with the node).
func csrsOf(t *testing.T, node string) []certificatesv1.CertificateSigningRequest {
	t.Helper()
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []certificatesv1.CertificateSigningRequest
	for _, c := range list.Items {
		if c.Spec.Username == "system:node:"+node || c.Annotations["attestation.certagent.io/node"] == node {
			out = append(out, c)
		}
	}
	return out
}

// TestCloudInitAttestationOnSystemd boots a node whose only user-data is
// packaging/cloud-init/user-data-attestation.yaml, filled in: no bootstrap
// token and no bootstrap kubeconfig anywhere. Its TPM is a software TPM on
// the host (the container shares the host's network: certagent reaches it
// as tcp://127.0.0.1:P, named by a config drop-in the image carries; this
// kernel has no TPM driver, CUSE or vTPM proxy to make a TPM character
// device). The cluster side runs on the host as an operator installs it.
// cloud-init installs the package, the service obtains its client
// certificate by TPM attestation and writes kubelet.conf, the journal holds
// no key material, and a restart requests nothing new.
func TestCloudInitAttestationOnSystemd(t *testing.T) {
	ctx := context.Background()
	cl, err := clusterside.Install(ctx, cp, t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := cl.ServiceAccountKubeconfig(ctx, clusterside.ServiceAccount)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cl.StartService(ctx, "node-suite", kubeconfig, clusterside.FreeAddr(), clusterside.FreeAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the attestation service's log:\n%s", tail([]byte(svc.LogText()), 4000))
		}
		svc.Stop()
	})
	tpm := swtpm.StartTest(t, cl.Vendor)
	name := fmt.Sprintf("ca-attest-%d", time.Now().UnixNano()%1000000)
	enrolWithThePackage(t, cl, svc, tpm, name)
	debName := filepath.Base(deb)
	ud := attestationUserData(t, svc.URL, cl.CA.Hash, debName)
	c := boot(t, rootfs, name, func(root string) {
		seed := filepath.Join(root, "var/lib/cloud/seed/nocloud")
		writeFile(t, filepath.Join(seed, "meta-data"), "instance-id: "+name+"\nlocal-hostname: "+name+"\n", 0o644)
		writeFile(t, filepath.Join(seed, "user-data"), ud, 0o600)
		copyFile(t, deb, filepath.Join(root, "root/dist", debName))
		// The image's own drop-in: where this machine's TPM is.
		writeFile(t, filepath.Join(root, "etc/certagent/config.d/40-tpm.yaml"),
			"apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nattestation:\n  tpm: "+tpm.Path()+"\n", 0o644)
	})

	if !t.Run("cloud-init installs the package and certagent joins by attestation", func(t *testing.T) {
		out, _ := c.exec(5*time.Minute, "cloud-init", "status", "--wait", "--long")
		if !strings.Contains(out, "status: done") {
			log, _ := c.exec(time.Minute, "tail", "-50", "/var/log/cloud-init-output.log")
			t.Fatalf("cloud-init: %s\n%s", out, log)
		}
		if v := c.must("dpkg-query", "-W", "-f=${Status}", "certagent"); v != "install ok installed" {
			t.Fatalf("certagent package: %q", v)
		}
		took := waitUntil(t, "certagent active (running)", 2*time.Minute, func() bool {
			return c.show("certagent", "ActiveState") == "active" && c.show("certagent", "SubState") == "running"
		})
		t.Logf("certagent active (running) %s after cloud-init finished", took.Round(time.Millisecond))
		if st := c.must("certagent", "status"); !strings.Contains(st, "obtained:  by TPM attestation") {
			t.Errorf("certagent status does not say the client certificate came by TPM attestation:\n%s", st)
		}
		if st := c.show("certagent", "StatusText"); !strings.HasPrefix(st, "client valid until ") {
			t.Errorf("systemd status text %q, want the client certificate valid", st)
		}
		journal := c.must("journalctl", "-u", "certagent", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, `kubelet.conf works	{"kubeconfig": "/etc/kubernetes/kubelet.conf", "user": "system:node:`+name+`", "source": "TPM attestation"}`) {
			t.Errorf("the journal does not say kubelet.conf works from TPM attestation:\n%s", tail([]byte(journal), 3000))
		}
		kc := readFile(t, c.file("/etc/kubernetes/kubelet.conf"))
		if !strings.Contains(kc, "server: "+cp.URL) || !strings.Contains(kc, "/var/lib/kubelet/pki/kubelet-client-current.pem") {
			t.Errorf("kubelet.conf:\n%s", kc)
		}
	}) {
		t.FailNow() // what follows needs the joined node
	}

	t.Run("the client certificate came from the attestation service, never a bootstrap credential", func(t *testing.T) {
		if exists(c.file("/etc/kubernetes/bootstrap-kubelet.conf")) {
			t.Error("a bootstrap kubeconfig is on the node")
		}
		var client []string
		for _, r := range csrsOf(t, name) {
			if strings.HasPrefix(r.Spec.Username, "system:bootstrap:") {
				t.Errorf("CSR %s requested with a bootstrap token (%s)", r.Name, r.Spec.Username)
			}
			if r.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName {
				client = append(client, r.Name+" by "+r.Spec.Username)
				if r.Spec.Username != clusterside.SAUser {
					t.Errorf("client CSR %s requested by %s, want the attestation service %s", r.Name, r.Spec.Username, clusterside.SAUser)
				}
			}
		}
		if len(client) != 1 {
			t.Fatalf("client CSRs for %s: %v, want one", name, client)
		}
		journal := c.must("journalctl", "-u", "certagent", "--no-pager", "-o", "cat")
		if strings.Contains(journal, "removed the bootstrap kubeconfig") {
			t.Errorf("the journal mentions a bootstrap credential:\n%s", tail([]byte(journal), 3000))
		}
	})

	t.Run("the journal holds no key material", func(t *testing.T) {
		journal := c.must("journalctl", "--no-pager", "-o", "cat")
		if !strings.Contains(journal, "certificate stored") {
			t.Fatal("the journal has no certagent lines: the check would prove nothing")
		}
		if strings.Contains(journal, "PRIVATE KEY") {
			t.Error("the journal contains private key material")
		}
	})

	t.Run("after systemctl restart certagent nothing new is requested", func(t *testing.T) {
		// The serving certificate is requested once the node has its client
		// certificate: approve it, so the restart finds both certificates.
		pending := servingCSR(t, name)
		if err := cp.ApproveCSR(ctx, pending); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, "the serving certificate", time.Minute, func() bool {
			return strings.Contains(c.show("certagent", "StatusText"), "; serving: valid until ")
		})
		before := len(csrsOf(t, name))
		client := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem")
		attempts, _ := svc.Metric(`certagent_attestation_attempts_total{reason="",result="issued"}`)
		pid := c.show("certagent", "MainPID")
		c.must("systemctl", "restart", "certagent")
		waitUntil(t, "certagent active again", time.Minute, func() bool {
			return c.show("certagent", "MainPID") != pid && c.show("certagent", "ActiveState") == "active"
		})
		time.Sleep(5 * time.Second) // time to request something, if it would
		if after := len(csrsOf(t, name)); after != before {
			t.Errorf("%d CSRs for the node after the restart, %d before", after, before)
		}
		if got, _ := svc.Metric(`certagent_attestation_attempts_total{reason="",result="issued"}`); got != attempts || attempts != 1 {
			t.Errorf("attestations issued: %v before the restart, %v after; want 1 and 1", attempts, got)
		}
		if got := linkTarget(c, "/var/lib/kubelet/pki/kubelet-client-current.pem"); got != client {
			t.Errorf("the client certificate changed across the restart (%s -> %s)", client, got)
		}
		if st := c.must("certagent", "status"); !strings.Contains(st, "obtained:  by TPM attestation") {
			t.Errorf("after the restart certagent status says:\n%s", st)
		}
	})

	// Last, as it takes the node's certificates away. This kernel has no TPM
	// driver, so a device node 10:224 (tpm0's) opens with ENODEV: the open
	// got through the unit's private /dev and its device policy to the kernel
	// (the shipped unit used to hide it: "stat /dev/tpmrm0: no such file or
	// directory"; a device policy denying it: "operation not permitted").
	t.Run("the unit lets certagent open /dev/tpmrm0, the default TPM", func(t *testing.T) {
		c.must("mknod", "/dev/tpmrm0", "c", "10", "224")
		c.must("rm", "/etc/certagent/config.d/40-tpm.yaml")
		c.must("systemctl", "stop", "certagent")
		c.must("sh", "-c", "rm /etc/kubernetes/kubelet.conf /var/lib/kubelet/pki/kubelet-client-*")
		c.must("systemctl", "start", "--no-block", "certagent")
		var journal string
		waitUntil(t, "certagent trying /dev/tpmrm0", time.Minute, func() bool {
			journal = c.must("journalctl", "-u", "certagent", "--no-pager", "-o", "cat")
			return strings.Contains(journal, "opening TPM /dev/tpmrm0: ")
		})
		if !strings.Contains(journal, "opening TPM /dev/tpmrm0: open /dev/tpmrm0: no such device") {
			t.Errorf("certagent in its unit could not reach /dev/tpmrm0:\n%s", tail([]byte(journal), 2000))
		}
	})
}
