package agent

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
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
)

// signer issues certificates for CSRs in the fake API, like the kubelet signer.
type signer struct {
	t    *testing.T
	now  func() time.Time // issue time; the fake clock's in daemon tests
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	// serial numbers the issued certificates (the deadline's jitter derives from it).
	serial atomic.Int64
}

func newSigner(t *testing.T) *signer {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	c, _ := x509.ParseCertificate(der)
	return &signer{t: t, now: time.Now, cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (s *signer) sign(csr *certificatesv1.CertificateSigningRequest) {
	block, _ := pem.Decode(csr.Spec.Request)
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		s.t.Fatal(err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
		usage = x509.ExtKeyUsageServerAuth
	}
	now := s.now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(s.serial.Add(1)), Subject: req.Subject, NotBefore: now.Add(-time.Minute),
		NotAfter: now.Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: req.DNSNames, IPAddresses: req.IPAddresses}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, req.PublicKey, s.key)
	if err != nil {
		s.t.Fatal(err)
	}
	csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateApproved, Status: "True"}}
	csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestRunOnceRetriesAmbiguousFailuresWithoutDuplicates: two creates time out
// on the server side (the CSR may or may not exist); the agent backs off on
// its clock, keeps its key, and ends with exactly one CSR.
func TestRunOnceRetriesAmbiguousFailuresWithoutDuplicates(t *testing.T) {
	dir := t.TempDir()
	sg := newSigner(t)
	_ = os.WriteFile(filepath.Join(dir, "ca.crt"), sg.pem, 0o600)
	boot := filepath.Join(dir, "bootstrap.conf")
	_ = os.WriteFile(boot, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca.crt}}]
users: [{name: u, user: {token: abcdef.0123456789abcdef}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	client := fake.NewClientset()
	var attempts atomic.Int32
	client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if attempts.Add(1) <= 2 {
			return true, nil, apierrors.NewServerTimeout(schema.GroupResource{Resource: "certificatesigningrequests"}, "create", 1)
		}
		sg.sign(a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest))
		return false, nil, nil
	})
	clk := clocktesting.NewFakeClock(time.Now())
	cfg := config.Default()
	cfg.NodeName, cfg.CertDir, cfg.Kubeconfig, cfg.BootstrapKubeconfig = "node-a", filepath.Join(dir, "pki"), filepath.Join(dir, "kubelet.conf"), boot
	cfg.Serving.Enabled = new(bool)
	a, err := New(cfg, Options{Clock: clk, Rand: func() float64 { return 0.5 }, Bootstrap: func(bc *bootstrap.Config) {
		bc.NewCSRClient = func(*rest.Config) (apiclient.CSRClient, error) {
			return client.CertificatesV1().CertificateSigningRequests(), nil
		}
		bc.CheckIdentity = func(context.Context, *rest.Config, string) error { return nil }
		bc.PrimaryIP = func() net.IP { return nil }
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.RunOnce(context.Background(), false) }()
	// The agent must wait on its clock exactly 1.25 s (the server's
	// Retry-After of 1 s, a quarter up its [1, 1.5) band with the draw 0.5,
	// above the 1-s back-off's middle draw), then 2 s (the back-off's middle
	// draw, above the Retry-After): a step just short of it releases nothing.
	for _, backoff := range []time.Duration{1250 * time.Millisecond, 2 * time.Second} {
		waitFor(t, clk.HasWaiters)
		before := attempts.Load()
		clk.Step(backoff - time.Millisecond)
		time.Sleep(20 * time.Millisecond)
		if attempts.Load() != before || !clk.HasWaiters() {
			t.Fatalf("retried before the %s back-off ended", backoff)
		}
		clk.Step(time.Millisecond)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunOnce did not finish")
	}
	if n := attempts.Load(); n != 3 {
		t.Fatalf("%d create attempts, want 3", n)
	}
	list, _ := client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if len(list.Items) != 1 {
		t.Fatalf("%d CSRs, want 1", len(list.Items))
	}
	if _, err := os.Stat(cfg.Kubeconfig); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond (a state of another goroutine) for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 10s")
}

// newFakeAPI is a fake API whose signer issues every CSR as it is created.
func newFakeAPI(sg *signer) *fake.Clientset {
	client := fake.NewClientset()
	client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sg.sign(a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest))
		return false, nil, nil
	})
	return client
}
