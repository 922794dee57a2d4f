package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withExpiredClient gives the node a kubelet.conf whose client certificate has
// expired, so certagent must bootstrap; the test then checks that a failed
// bootstrap leaves these files exactly as they were.
func withExpiredClient(t *testing.T, n *node) {
	t.Helper()
	withSelfSignedClient(t, n, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
}

// withSelfSignedClient gives the node a kubelet.conf whose client
// certificate (for the node, valid from notBefore to notAfter) no CA of the
// cluster signed: the API server answers 401, as after a cluster rebuild.
func withSelfSignedClient(t *testing.T, n *node, notBefore, notAfter time.Time) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "system:node:" + n.name, Organization: []string{"system:nodes"}},
		NotBefore: notBefore, NotAfter: notAfter, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
	if err := os.MkdirAll(n.certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := "kubelet-client-2020-01-01-00-00-00.pem"
	if err := os.WriteFile(filepath.Join(n.certDir, old), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(old, filepath.Join(n.certDir, "kubelet-client-current.pem")); err != nil {
		t.Fatal(err)
	}
	pemPath := filepath.Join(n.certDir, "kubelet-client-current.pem")
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: " + cp.URL + "\n    certificate-authority: " + cp.CAFile +
		"\nusers:\n- name: default-auth\n  user:\n    client-certificate: " + pemPath + "\n    client-key: " + pemPath +
		"\ncontexts:\n- name: default-context\n  context: {cluster: default-cluster, user: default-auth}\ncurrent-context: default-context\n"
	if err := os.WriteFile(n.kubeconf, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestFailuresLeaveFilesUntouched: each bad credential ends run --once with a
// clear error and changes nothing on disk.
func TestFailuresLeaveFilesUntouched(t *testing.T) {
	for _, tc := range []struct {
		name    string
		token   controlplane.TokenOptions
		prepare func(t *testing.T, n *node)
		want    []string
	}{
		{
			name:  "unknown token",
			token: controlplane.TokenOptions{AutoApprove: true},
			prepare: func(t *testing.T, n *node) {
				n.token = "zzzzzz.0123456789abcdef"
				if err := cp.WriteBootstrapKubeconfig(n.bootstrap, n.token, false); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"rejected the credentials in", "401 Unauthorized", "kubeadm token create"},
		},
		{
			name:  "expired token",
			token: controlplane.TokenOptions{AutoApprove: true, Expiration: time.Now().Add(-time.Hour)},
			want:  []string{"rejected the credentials in", "401 Unauthorized"},
		},
		{
			name:  "missing RBAC",
			token: controlplane.TokenOptions{NoRBAC: true},
			want:  []string{"forbidden for the credentials in", "system:node-bootstrapper", `cannot create resource "certificatesigningrequests"`},
		},
		{
			name:  "wrong CA",
			token: controlplane.TokenOptions{AutoApprove: true},
			prepare: func(t *testing.T, n *node) {
				other := filepath.Join(n.dir, "other-ca.crt")
				key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
				der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
				_ = os.WriteFile(other, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
				data := strings.ReplaceAll(string(mustRead(t, n.bootstrap)), cp.CAFile, other)
				if err := os.WriteFile(n.bootstrap, []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"presented a certificate not signed by the CA in", "check its certificate-authority"},
		},
		{
			name:  "malformed bootstrap kubeconfig",
			token: controlplane.TokenOptions{AutoApprove: true},
			prepare: func(t *testing.T, n *node) {
				if err := os.WriteFile(n.bootstrap, []byte("this: is: not: a kubeconfig"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			want: []string{"is not a valid kubeconfig"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, tc.token)
			withExpiredClient(t, n)
			if tc.prepare != nil {
				tc.prepare(t, n)
			}
			before := n.snapshot()
			start := time.Now()
			code, out := n.runOnce("--serving=false")
			if code == 0 {
				t.Fatalf("exit 0, want a failure:\n%s", out)
			}
			if time.Since(start) > 30*time.Second {
				t.Errorf("took %s to fail; a permanent error should end --once at once", time.Since(start))
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			assertUnchanged(t, before, n.snapshot())
		})
	}
}

// TestDeniedClientCSR: a denied client CSR ends --once with the reason and who
// denied it; nothing is written and the bootstrap kubeconfig stays.
func TestDeniedClientCSR(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: false})
	before := n.snapshot()
	p := n.start("--once", "--serving=false")
	csr := n.waitForCSR(certificatesv1.KubeAPIServerClientKubeletSignerName, time.Minute)
	p.waitForOutput(t, "waiting for the CSR", 30*time.Second)
	if err := cp.DenyCSR(context.Background(), csr.Name, "KubectlDeny", "This CSR was denied by kubectl certificate deny."); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code == 0 {
		t.Fatalf("exit 0 after a denial:\n%s", p.out.String())
	}
	for _, w := range []string{"CSR " + csr.Name + " was denied", `reason "KubectlDeny"`, "kubectl certificate approve"} {
		if !strings.Contains(p.out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, p.out.String())
		}
	}
	assertUnchanged(t, before, n.snapshot(), "kubelet-client-pending.key")
	if exists(filepath.Join(n.certDir, "kubelet-client-pending.key")) {
		t.Error("the denied request's key was kept; the next attempt would meet the same denial")
	}
}

// TestDeniedServingCSR: a denied serving CSR leaves the working client
// certificate and kubelet.conf exactly as they were.
func TestDeniedServingCSR(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	if code, out := n.runOnce("--serving=false"); code != 0 {
		t.Fatalf("client bootstrap: exit %d\n%s", code, out)
	}
	before := n.snapshot()
	p := n.start("--once")
	csr := n.waitForCSR(certificatesv1.KubeletServingSignerName, time.Minute)
	p.waitForOutput(t, "kubectl certificate approve "+csr.Name, 30*time.Second)
	if err := cp.DenyCSR(context.Background(), csr.Name, "NotOurNode", "the IP address is not this node's"); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code == 0 {
		t.Fatalf("exit 0 after a denial:\n%s", p.out.String())
	}
	if !strings.Contains(p.out.String(), `reason "NotOurNode": the IP address is not this node's`) {
		t.Errorf("output lacks the denial reason:\n%s", p.out.String())
	}
	assertUnchanged(t, before, n.snapshot(), "kubelet-server-pending.key")
}

// TestUnreachableServerGivesUpAfterTimeout: --once retries a server that
// refuses connections with back-off and gives up after --timeout, untouched.
func TestUnreachableServerGivesUpAfterTimeout(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	withExpiredClient(t, n)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	data := strings.ReplaceAll(string(mustRead(t, n.bootstrap)), cp.URL, "https://"+closed)
	if err := os.WriteFile(n.bootstrap, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	before := n.snapshot()
	start := time.Now()
	code, out := n.runOnce("--serving=false", "--timeout", "6s")
	took := time.Since(start)
	if code == 0 {
		t.Fatalf("exit 0 against a closed port:\n%s", out)
	}
	if took < 6*time.Second || took > 20*time.Second {
		t.Errorf("gave up after %s, want about the 6s timeout", took)
	}
	for _, w := range []string{"gave up after 6s", "connection refused", "attempt failed, retrying"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if retries := strings.Count(out, "attempt failed, retrying"); retries < 2 || retries > 6 {
		t.Errorf("%d retries in 6s; want a few, spaced by back-off (1s, 2s, 4s)", retries)
	}
	assertUnchanged(t, before, n.snapshot())
}

// TestCSRDeletedWhileWaiting: someone deletes the pending CSR; --once posts it
// again under the same name (same key) and finishes once it is approved.
func TestCSRDeletedWhileWaiting(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: false})
	p := n.start("--once", "--serving=false")
	csr := n.waitForCSR(certificatesv1.KubeAPIServerClientKubeletSignerName, time.Minute)
	p.waitForOutput(t, "waiting for the CSR", 30*time.Second)
	if err := cp.Admin.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), csr.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p.waitForOutput(t, "CSR "+csr.Name+" was deleted while certagent was waiting for it; certagent posts it again on the next attempt", 30*time.Second)
	again := n.waitForCSR(certificatesv1.KubeAPIServerClientKubeletSignerName, 30*time.Second)
	if again.Name != csr.Name || again.UID == csr.UID {
		t.Fatalf("re-posted CSR %s (uid %s), want the same name %s as a new object", again.Name, again.UID, csr.Name)
	}
	if err := cp.ApproveCSR(context.Background(), again.Name); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, time.Minute); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p.out.String())
	}
}

// TestReadableBootstrapKubeconfigWarns: a bootstrap kubeconfig others can read
// still works, with a warning that says why it matters and what to do.
func TestReadableBootstrapKubeconfigWarns(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	if err := os.Chmod(n.bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := n.runOnce("--serving=false")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	want := "the bootstrap kubeconfig is readable by other users; its token lets anyone on this machine request this node's certificates: chmod 0600 it"
	if !strings.Contains(out, want) || !strings.Contains(out, `"mode": "0644"`) {
		t.Errorf("output lacks the warning %q:\n%s", want, out)
	}
}
