package bootstrap

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/bootstrap/kubeconfig/kubeconfigtest"
)

// fixture is a node's directories, a bootstrap kubeconfig and a fake API.
type fixture struct {
	t        *testing.T
	dir      string
	ca       *testCA
	client   *fake.Clientset
	creates  atomic.Int32
	identity error // what CheckIdentity returns
	cfg      Config
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{t: t, dir: t.TempDir(), ca: newTestCA(t, "cluster-ca"), client: fake.NewClientset()}
	kubeconfigtest.WriteFile(t, f.dir, "ca.crt", string(f.ca.certPEM))
	kubeconfigtest.WriteFile(t, f.dir, "bootstrap-kubelet.conf", kubeconfigtest.Bootstrap)
	f.client.PrependReactor("create", "certificatesigningrequests", func(k8stesting.Action) (bool, runtime.Object, error) {
		f.creates.Add(1)
		return false, nil, nil
	})
	f.cfg = Config{
		NodeName:                "node-a",
		CertDir:                 filepath.Join(f.dir, "pki"),
		KubeconfigPath:          filepath.Join(f.dir, "kubelet.conf"),
		BootstrapKubeconfigPath: filepath.Join(f.dir, "bootstrap-kubelet.conf"),
		PrimaryIP:               func() net.IP { return net.ParseIP("10.0.0.7") },
		Clock:                   clocktesting.NewFakeClock(time.Now()),
		NewCSRClient: func(*rest.Config) (apiclient.CSRClient, error) {
			return f.client.CertificatesV1().CertificateSigningRequests(), nil
		},
		CheckIdentity: func(context.Context, *rest.Config, string) error { return f.identity },
	}
	return f
}

func (f *fixture) bootstrapper() *Bootstrapper {
	b, err := New(f.cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// sign issues the CSR as the kubelet signer would after approval.
func (f *fixture) sign(csr *certificatesv1.CertificateSigningRequest) {
	req, err := parseCSR(csr.Spec.Request)
	if err != nil {
		f.t.Fatal(err)
	}
	kind := Client
	if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
		kind = Serving
	}
	r := Request{Kind: kind, NodeName: strings.TrimPrefix(req.Subject.CommonName, "system:node:"), DNSNames: req.DNSNames, IPAddresses: req.IPAddresses}
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: certificatesv1.CertificateApproved, Status: "True", Reason: "AutoApproved"})
	csr.Status.Certificate = f.ca.issue(f.t, req.PublicKey, r, nil)
}

// autoApprove issues every CSR as it is created.
func (f *fixture) autoApprove() {
	f.client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.sign(a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest))
		return false, nil, nil
	})
}

func (f *fixture) csrCount() int {
	list, err := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return len(list.Items)
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

func TestEnsureClientBootstraps(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	b := f.bootstrapper()
	res, err := b.EnsureClient(context.Background(), false)
	if err != nil || !res.Stored {
		t.Fatalf("EnsureClient = stored %v, %v", res.Stored, err)
	}
	node, err := b.LoadNode()
	if err != nil {
		t.Fatal(err)
	}
	rc := node.Config
	if rc.CertFile != CurrentPath(f.cfg.CertDir, Client) || rc.KeyFile != rc.CertFile {
		t.Fatalf("kubelet.conf references cert %q key %q, want the current link", rc.CertFile, rc.KeyFile)
	}
	if rc.CAFile != filepath.Join(f.dir, "ca.crt") {
		t.Fatalf("kubelet.conf CA %q, want the bootstrap kubeconfig's file", rc.CAFile)
	}
	target, err := os.Readlink(CurrentPath(f.cfg.CertDir, Client))
	if err != nil || !strings.HasPrefix(target, "kubelet-client-") {
		t.Fatalf("current link -> %q, %v", target, err)
	}
	for _, p := range []string{filepath.Join(f.cfg.CertDir, target), f.cfg.KubeconfigPath} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, %v; want 0600", p, fi.Mode().Perm(), err)
		}
	}
	if fi, _ := os.Stat(f.cfg.CertDir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("cert dir mode %v, want 0700", fi.Mode().Perm())
	}
	if exists(f.cfg.BootstrapKubeconfigPath) || exists(PendingKeyPath(f.cfg.CertDir, Client)) {
		t.Fatal("bootstrap kubeconfig or pending key left behind")
	}
	// A second run finds a valid kubelet.conf and asks for nothing.
	if res, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil || res.Stored {
		t.Fatalf("second EnsureClient = stored %v, %v", res.Stored, err)
	}
	if n := f.creates.Load(); n != 1 {
		t.Fatalf("%d CSR creations, want 1", n)
	}
}

func TestEnsureClientReusesPendingCSRAfterRestart(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := f.bootstrapper().EnsureClient(ctx, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first run: %v, want a deadline while pending", err)
	}
	if !exists(PendingKeyPath(f.cfg.CertDir, Client)) {
		t.Fatal("pending key not kept for the next run")
	}
	// The CSR gets approved while we are "down"; the restarted agent adopts it.
	list, _ := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	csr := list.Items[0].DeepCopy()
	f.sign(csr)
	if _, err := f.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(context.Background(), csr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if res, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil || !res.Stored {
		t.Fatalf("restarted run = stored %v, %v", res.Stored, err)
	}
	if n := f.csrCount(); n != 1 {
		t.Fatalf("%d CSR objects, want exactly 1", n)
	}
}

func TestEnsureClientDenied(t *testing.T) {
	f := newFixture(t)
	f.client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		csr := a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest)
		csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: "True", Reason: "KubectlDeny", Message: "This CSR was denied by kubectl certificate deny."}}
		csr.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Subresource: "approval", Operation: metav1.ManagedFieldsOperationUpdate}}
		return false, nil, nil
	})
	_, err := f.bootstrapper().EnsureClient(context.Background(), false)
	var csrErr *CSRError
	if !errors.As(err, &csrErr) || csrErr.Outcome != OutcomeDenied {
		t.Fatalf("error = %v, want a denial", err)
	}
	for _, want := range []string{"was denied by kubectl", `reason "KubectlDeny": This CSR was denied by kubectl certificate deny.`, "kubectl certificate approve"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if exists(f.cfg.KubeconfigPath) || exists(CurrentPath(f.cfg.CertDir, Client)) || exists(PendingKeyPath(f.cfg.CertDir, Client)) {
		t.Fatal("a denial wrote files or kept the denied key")
	}
	if !exists(f.cfg.BootstrapKubeconfigPath) {
		t.Fatal("bootstrap kubeconfig removed after a denial")
	}
}

func TestEnsureClientRefusesCertificateFromAnotherCA(t *testing.T) {
	f := newFixture(t)
	rogue := newTestCA(t, "rogue")
	f.ca, f.cfg.IssuerCAFile = rogue, filepath.Join(f.dir, "ca.crt") // signer uses rogue, we expect the cluster CA
	f.autoApprove()
	_, err := f.bootstrapper().EnsureClient(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "refusing the issued certificate, nothing was written") {
		t.Fatalf("error = %v", err)
	}
	if exists(f.cfg.KubeconfigPath) || exists(CurrentPath(f.cfg.CertDir, Client)) {
		t.Fatal("files written for an unverifiable certificate")
	}
}

func TestEnsureClientKeepsBootstrapWhenIdentityFails(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	f.identity = errors.New("authenticates as system:anonymous")
	_, err := f.bootstrapper().EnsureClient(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "bootstrap kubeconfig is kept") {
		t.Fatalf("error = %v", err)
	}
	if !exists(f.cfg.BootstrapKubeconfigPath) {
		t.Fatal("bootstrap kubeconfig removed although kubelet.conf was not proven")
	}
}

func TestEnsureClientNoCredentials(t *testing.T) {
	f := newFixture(t)
	_ = os.Remove(f.cfg.BootstrapKubeconfigPath)
	_, err := f.bootstrapper().EnsureClient(context.Background(), false)
	if !errors.Is(err, ErrNoCredentials) || !strings.Contains(err.Error(), "write a bootstrap-token kubeconfig there") {
		t.Fatalf("error = %v", err)
	}
}

func TestEnsureServing(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	f.cfg.ServingDNSNames = []string{"node-a.example"}
	b := f.bootstrapper()
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if res, err := b.EnsureServing(context.Background(), false); err != nil || !res.Stored {
		t.Fatalf("EnsureServing = %v, %v", res.Stored, err)
	}
	pair, err := LoadCurrent(f.cfg.CertDir, Serving)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(pair.Leaf.DNSNames, ","); got != "node-a,node-a.example" {
		t.Fatalf("DNS SANs %q", got)
	}
	if len(pair.Leaf.IPAddresses) != 1 || pair.Leaf.IPAddresses[0].String() != "10.0.0.7" {
		t.Fatalf("IP SANs %v", pair.Leaf.IPAddresses)
	}
	if res, err := b.EnsureServing(context.Background(), false); err != nil || res.Stored {
		t.Fatalf("second EnsureServing = %v, %v", res.Stored, err)
	}
	if n := f.creates.Load(); n != 2 {
		t.Fatalf("%d CSR creations, want 2 (client, serving)", n)
	}
}

func TestCSRNameIsDeterministic(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	r := Request{Kind: Client, NodeName: "n"}
	a, _ := r.CSRName(k1.Public())
	b, _ := r.CSRName(k1.Public())
	c, _ := r.CSRName(k2.Public())
	d, _ := Request{Kind: Serving, NodeName: "n"}.CSRName(k1.Public())
	if a != b || a == c || a == d || !strings.HasPrefix(a, "node-csr-") {
		t.Fatalf("names: same key %q %q, other key %q, other kind %q", a, b, c, d)
	}
}

// TestKubeletReadyNamesTheServingCSRToApprove: while the serving CSR waits
// for approval, what holds the kubelet back names that CSR and the command
// that approves it (certagent wait prints it in the kubelet's journal, where
// a failed kubeadm join points).
func TestKubeletReadyNamesTheServingCSRToApprove(t *testing.T) {
	f := newFixture(t)
	var signing atomic.Bool // the signer issues what is created while set
	signing.Store(true)
	f.client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if signing.Load() {
			f.sign(a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest))
		}
		return false, nil, nil
	})
	b := f.bootstrapper()
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	_, missing := b.KubeletReady(context.Background(), true)
	if missing == nil || strings.Contains(missing.Error(), "approve") {
		t.Fatalf("before any serving request: %v, want no valid serving certificate and nothing to approve", missing)
	}
	// The serving request waits: its key is on disk, its CSR unapproved.
	signing.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, _ = b.EnsureServing(ctx, false)
	list, err := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var pending string
	for _, c := range list.Items {
		if c.Spec.SignerName == certificatesv1.KubeletServingSignerName {
			pending = c.Name
		}
	}
	if pending == "" {
		t.Fatal("no serving CSR was posted")
	}
	_, missing = b.KubeletReady(context.Background(), true)
	want := "; waiting for approval of " + pending + " (kubectl certificate approve " + pending + ")"
	if missing == nil || !strings.HasSuffix(missing.Error(), want) {
		t.Fatalf("KubeletReady = %v, want it to end %q", missing, want)
	}
}
