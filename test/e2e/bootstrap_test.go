package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	"k8s.io/klog/v2"
	kubeletbootstrap "k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"

	"github.com/certagent/certagent/test/controlplane"
)

// TestBootstrapClientAndServing is the whole first boot of a node: the client
// CSR is auto-approved, the serving CSR is posted with the node identity and
// approved through the API, and the kubelet's own code accepts the result.
func TestBootstrapClientAndServing(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  dnsNames: [extra.example.test]\n")
	p := n.start("--once")

	// certagent says it is waiting and how to approve before anyone approves.
	csr := n.waitForCSR(certificatesv1.KubeletServingSignerName, time.Minute)
	p.waitForOutput(t, "kubectl certificate approve "+csr.Name, 30*time.Second)
	if want := "system:node:" + n.name; csr.Spec.Username != want {
		t.Fatalf("serving CSR posted by %q, want %q (approvers require the node identity)", csr.Spec.Username, want)
	}
	if err := cp.ApproveCSR(context.Background(), csr.Name); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.out.String())
	}

	// Files and kubeconfig.
	if exists(n.bootstrap) {
		t.Error("bootstrap kubeconfig still present")
	}
	clientCSR := n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)
	if len(clientCSR) != 1 || !strings.HasPrefix(clientCSR[0].Spec.Username, "system:bootstrap:") {
		t.Fatalf("client CSRs: %d, want 1 posted by the bootstrap token", len(clientCSR))
	}

	// The written kubeconfig authenticates as the node.
	rc, err := clientcmd.BuildConfigFromFlags("", n.kubeconf)
	if err != nil {
		t.Fatal(err)
	}
	if rc.CertFile != filepath.Join(n.certDir, "kubelet-client-current.pem") || len(rc.CertData) != 0 {
		t.Errorf("kubelet.conf client-certificate = %q (embedded %d bytes), want the current link", rc.CertFile, len(rc.CertData))
	}
	review, err := kubernetes.NewForConfigOrDie(rc).AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := review.Status.UserInfo; u.Username != "system:node:"+n.name || !slices.Contains(u.Groups, "system:nodes") {
		t.Fatalf("kubelet.conf authenticates as %q %v", u.Username, u.Groups)
	}

	// The kubelet's own bootstrap code takes kubelet.conf as is, without bootstrapping.
	certCfg, userCfg, err := kubeletbootstrap.LoadClientConfig(klog.Background(), n.kubeconf, n.bootstrap, n.certDir)
	if err != nil {
		t.Fatalf("kubelet LoadClientConfig: %v", err)
	}
	if certCfg.CertFile != rc.CertFile || userCfg.CertFile != rc.CertFile {
		t.Fatalf("kubelet LoadClientConfig used %q / %q, want kubelet.conf's %q", certCfg.CertFile, userCfg.CertFile, rc.CertFile)
	}
	// client-go's FileStore (what the kubelet's certificate managers use) loads both pems.
	serials := map[string]string{}
	for _, tc := range []struct{ prefix, usage string }{{"kubelet-client", "client"}, {"kubelet-server", "server"}} {
		store, err := certificate.NewFileStore(tc.prefix, n.certDir, n.certDir, "", "")
		if err != nil {
			t.Fatal(err)
		}
		cert, err := store.Current()
		if err != nil {
			t.Fatalf("%s FileStore.Current: %v", tc.prefix, err)
		}
		if cert.Leaf.Subject.CommonName != "system:node:"+n.name {
			t.Errorf("%s: CN %q", tc.prefix, cert.Leaf.Subject.CommonName)
		}
		serials[tc.prefix] = cert.Leaf.SerialNumber.String()
		if tc.usage == "server" {
			if !slices.Contains(cert.Leaf.DNSNames, n.name) || !slices.Contains(cert.Leaf.DNSNames, "extra.example.test") {
				t.Errorf("serving DNS names %v, want %s and extra.example.test", cert.Leaf.DNSNames, n.name)
			}
		}
	}

	// The kubelet's loaders of the control plane's own version (test/k8s,
	// CERTAGENT_K8S) take the files too: the version matrix runs this test
	// against every minor.
	checkKubeletLoaders(t, n, rc.CertFile, serials)

	// status -o json reports both certificates as valid, with nothing pending.
	st := n.status()
	if st.NodeName != n.name || !st.Kubeconfig.Exists || len(st.Certificates) != 2 {
		t.Fatalf("status = %+v", st)
	}
	for _, c := range st.Certificates {
		if !c.Present || !c.Valid || c.PendingCSR != nil || c.RemainingSeconds < 3600 || c.NotAfter.IsZero() {
			t.Errorf("status of the %s certificate = %+v", c.Kind, c)
		}
		life := c.NotAfter.Sub(c.NotBefore)
		if lo, hi := c.NotBefore.Add(life*7/10), c.NotBefore.Add(life*9/10); c.RenewalDeadline.Before(lo) || c.RenewalDeadline.After(hi) {
			t.Errorf("%s renewal deadline %s outside 70–90 %% of the lifetime [%s, %s]", c.Kind, c.RenewalDeadline, lo, hi)
		}
	}

	// A second run finds everything valid and makes no CSR.
	before := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)) + len(n.csrs(certificatesv1.KubeletServingSignerName))
	snap := n.snapshot()
	if code, out := n.runOnce(); code != 0 {
		t.Fatalf("second run exit %d:\n%s", code, out)
	}
	after := len(n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)) + len(n.csrs(certificatesv1.KubeletServingSignerName))
	if before != after {
		t.Fatalf("second run made %d CSRs", after-before)
	}
	assertUnchanged(t, snap, n.snapshot())
}

// TestBootstrapEmbeddedCA: a bootstrap kubeconfig with certificate-authority-data
// gives a kubelet.conf with the CA embedded too.
func TestBootstrapEmbeddedCA(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	if err := cp.WriteBootstrapKubeconfig(n.bootstrap, n.token, true); err != nil {
		t.Fatal(err)
	}
	if code, out := n.runOnce("--serving=false"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	cfg, err := clientcmd.LoadFromFile(n.kubeconf)
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Clusters["default-cluster"]
	if c == nil || len(c.CertificateAuthorityData) == 0 || c.CertificateAuthority != "" {
		t.Fatalf("kubelet.conf cluster = %+v, want embedded CA data", c)
	}
}

// TestRestartWhilePendingReusesCSR: kill -9 while the client CSR is pending
// (no auto-approval), restart, and the one CSR gets approved and used.
func TestRestartWhilePendingReusesCSR(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: false})
	p := n.start("--once", "--serving=false")
	csr := n.waitForCSR(certificatesv1.KubeAPIServerClientKubeletSignerName, time.Minute)
	p.waitForOutput(t, "waiting for the CSR to be approved", 30*time.Second)
	p.kill9(t)

	// status names the pending request from the key on disk alone.
	st := n.status()
	if st.Certificates[0].PendingCSR == nil || st.Certificates[0].PendingCSR.Name != csr.Name ||
		st.Certificates[0].PendingCSR.ApproveCommand != "kubectl certificate approve "+csr.Name {
		t.Fatalf("status pendingCSR = %+v, want %s", st.Certificates[0].PendingCSR, csr.Name)
	}

	p = n.start("--once", "--serving=false")
	p.waitForOutput(t, "found our pending certificate signing request", 30*time.Second)
	if err := cp.ApproveCSR(context.Background(), csr.Name); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.out.String())
	}
	csrs := n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName)
	if len(csrs) != 1 {
		t.Fatalf("%d client CSRs after a kill -9 and restart, want exactly 1", len(csrs))
	}
	store, _ := certificate.NewFileStore("kubelet-client", n.certDir, n.certDir, "", "")
	cert, err := store.Current()
	if err != nil {
		t.Fatal(err)
	}
	issued := csrs[0].Status.Certificate
	if !strings.Contains(string(mustRead(t, filepath.Join(n.certDir, "kubelet-client-current.pem"))), strings.TrimSpace(string(issued))) {
		t.Fatalf("stored certificate (serial %s) is not the one issued for CSR %s", cert.Leaf.SerialNumber, csrs[0].Name)
	}
}

// checkKubeletLoaders runs loadercheck, built from the control plane's
// Kubernetes version, on the node's files: LoadClientConfig must use
// kubelet.conf's certificate without bootstrapping, and NewFileStore must find
// the certificates with the serials given.
func checkKubeletLoaders(t *testing.T, n *node, certFile string, serials map[string]string) {
	t.Helper()
	out, err := exec.Command(cpBins.LoaderCheck, "-kubeconfig", n.kubeconf, "-bootstrap-kubeconfig", n.bootstrap, "-cert-dir", n.certDir).CombinedOutput()
	if err != nil {
		t.Fatalf("the kubelet's loaders of %s: %v\n%s", cpBins.Version, err, out)
	}
	want := []string{"certFile=" + certFile + " "}
	for prefix, serial := range serials {
		want = append(want, "NewFileStore "+prefix+" serial="+serial+" ")
	}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("the kubelet's loaders of %s: want %q in\n%s", cpBins.Version, w, out)
		}
	}
	t.Logf("the kubelet's loaders of %s accept the files:\n%s", cpBins.Version, out)
}
