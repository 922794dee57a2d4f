package bootstrap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/cert"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/bootstrap/kubeconfig"
	"github.com/certagent/certagent/bootstrap/kubeconfig/kubeconfigtest"
)

// TestSymlinkedBootstrapKubeconfigIsRemovedWithItsTarget: cloud-init or an
// operator may link the bootstrap kubeconfig to a file elsewhere; once
// kubelet.conf works, the file holding the token goes too, not just the link.
func TestSymlinkedBootstrapKubeconfigIsRemovedWithItsTarget(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	target := filepath.Join(f.dir, "secrets", "bootstrap.conf")
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.cfg.BootstrapKubeconfigPath)
	// The CA path in the kubeconfig is relative to the link's directory.
	if err := os.WriteFile(target, []byte(strings.ReplaceAll(string(data), "ca.crt", filepath.Join(f.dir, "ca.crt"))), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(f.cfg.BootstrapKubeconfigPath)
	if err := os.Symlink(target, f.cfg.BootstrapKubeconfigPath); err != nil {
		t.Fatal(err)
	}
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{f.cfg.BootstrapKubeconfigPath, target} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after the bootstrap: %v", p, err)
		}
	}
}

// TestBootstrapTokenFileIsRemovedWithTheKubeconfig: a bootstrap kubeconfig
// that reads its token from a file (tokenFile, relative to the kubeconfig)
// leaves no token behind once kubelet.conf works; a token file is kept
// while the bootstrap kubeconfig is.
func TestBootstrapTokenFileIsRemovedWithTheKubeconfig(t *testing.T) {
	for _, proofOK := range []bool{true, false} {
		f := newFixture(t)
		f.autoApprove()
		if !proofOK {
			f.identity = errors.New("unreachable")
		}
		token := kubeconfigtest.WriteFile(t, f.dir, "token", "abcdef.0123456789abcdef\n")
		kubeconfigtest.WriteFile(t, f.dir, "bootstrap-kubelet.conf", strings.Replace(kubeconfigtest.Bootstrap, "token: abcdef.0123456789abcdef", "tokenFile: token", 1))
		_, err := f.bootstrapper().EnsureClient(context.Background(), false)
		if (err == nil) != proofOK {
			t.Fatalf("EnsureClient: %v", err)
		}
		if exists(token) == proofOK || exists(f.cfg.BootstrapKubeconfigPath) == proofOK {
			t.Fatalf("proof succeeded %v: token file left %v, bootstrap kubeconfig left %v", proofOK, exists(token), exists(f.cfg.BootstrapKubeconfigPath))
		}
	}
}

// TestSymlinkedKubeletConfIsWrittenThrough: a kubelet.conf that is a link
// stays a link; its target gets the new content.
func TestSymlinkedKubeletConfIsWrittenThrough(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	target := filepath.Join(f.dir, "shared", "kubelet.conf")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("shared/kubelet.conf", f.cfg.KubeconfigPath); err != nil { // dangling until written
		t.Fatal(err)
	}
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(f.cfg.KubeconfigPath)
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("kubelet.conf is no longer a symlink: %v %v", fi.Mode(), err)
	}
	if _, err := kubeconfig.LoadKubelet(target); err != nil {
		t.Fatalf("the link's target: %v", err)
	}
}

// TestCSRNameTakenByAnotherKeyStartsOver: a CSR under our deterministic name
// that another key signed can never be ours; the pending key is discarded so
// the next attempt uses a new key and so a new name (it used to be kept for
// ever, failing the same way every time).
func TestCSRNameTakenByAnotherKeyStartsOver(t *testing.T) {
	f := newFixture(t)
	key, _, _, err := loadOrCreatePendingKey(func() string { _ = EnsureCertDir(f.cfg.CertDir); return f.cfg.CertDir }(), Client)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Kind: Client, NodeName: f.cfg.NodeName}
	name, _ := req.CSRName(key.Public())
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	subject := req.Subject()
	csrPEM, _ := cert.MakeCSR(other, &subject, nil, nil)
	if _, err := f.client.CertificatesV1().CertificateSigningRequests().Create(context.Background(), &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       certificatesv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: Client.Signer(), Usages: req.Usages()},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = f.bootstrapper().EnsureClient(context.Background(), false)
	if err == nil || !strings.Contains(err.Error(), "exists but is not ours") {
		t.Fatalf("error = %v", err)
	}
	if _, err := os.Stat(PendingKeyPath(f.cfg.CertDir, Client)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the pending key whose name is taken was kept: %v", err)
	}
	f.autoApprove()
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatalf("the next attempt, with a new key: %v", err)
	}
}

// closingWatcher is a CSR client whose watches end at once without news,
// like an API server that keeps dropping connections.
type closingWatcher struct {
	apiclient.CSRClient
	csr     *certificatesv1.CertificateSigningRequest
	lists   atomic.Int32
	watches atomic.Int32
	fromRV  []string // the resource version each watch asked for
	mu      sync.Mutex
}

func (c *closingWatcher) List(context.Context, metav1.ListOptions) (*certificatesv1.CertificateSigningRequestList, error) {
	c.lists.Add(1)
	return &certificatesv1.CertificateSigningRequestList{Items: []certificatesv1.CertificateSigningRequest{*c.csr}}, nil
}

func (c *closingWatcher) Watch(_ context.Context, o metav1.ListOptions) (watch.Interface, error) {
	c.watches.Add(1)
	c.mu.Lock()
	c.fromRV = append(c.fromRV, o.ResourceVersion)
	c.mu.Unlock()
	w := watch.NewFake()
	w.Stop()
	return w, nil
}

// TestWaitBacksOffWhileWatchesKeepFailing: each resume waits on the
// injected clock, from 200 ms doubling to 30 s (it used to relist every
// 200 ms on the real clock, for ever).
func TestWaitBacksOffWhileWatchesKeepFailing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := clocktesting.NewFakeClock(time.Now())
		c := &closingWatcher{csr: &certificatesv1.CertificateSigningRequest{ObjectMeta: metav1.ObjectMeta{Name: "n", UID: "u", ResourceVersion: "7"}}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := waitForCertificate(ctx, clk, c, c.csr); done <- err }()
		synctest.Wait()
		for range 5 * 60 * 10 { // five minutes in 100 ms steps
			clk.Step(100 * time.Millisecond)
			synctest.Wait()
		}
		// 0.2+0.4+…+25.6 s = 51 s for the first 8, then one per 30 s; each
		// resumed from the version it had, without listing again.
		if n := c.watches.Load(); n < 10 || n > 8+9+1 {
			t.Fatalf("%d watches in five minutes of watches ending at once", n)
		}
		if n := c.lists.Load(); n != 0 {
			t.Fatalf("%d lists: a watch that ends without an error is resumed from its resource version", n)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, rv := range c.fromRV {
			if rv != "7" {
				t.Fatalf("a watch resumed from %q, want 7", rv)
			}
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("wait ended with %v", err)
		}
	})
}

// TestSlowClockDoesNotLoopOnNewCertificates: the node's clock is behind by
// 6 minutes; the signer backdates by 5 (as the test CA does), so a new
// certificate starts a minute in the node's future — within the 2-minute
// skew certagent accepts at issuance. Judging it "not yet valid" afterwards
// made certagent request another at once, in a loop (the simulation found
// 96 serving CSRs in an hour). One CSR of each kind, then nothing.
func TestSlowClockDoesNotLoopOnNewCertificates(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	f.cfg.Clock = clocktesting.NewFakeClock(time.Now().Add(-6 * time.Minute))
	b := f.bootstrapper()
	for range 3 {
		if _, err := b.EnsureClient(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		if _, err := b.EnsureServing(context.Background(), false); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.creates.Load(); n != 2 {
		t.Fatalf("%d CSRs with a clock 6 minutes slow, want 2 (one of each)", n)
	}
}

// TestUndeletableBootstrapKubeconfigDoesNotLoop: a bootstrap kubeconfig that
// cannot be removed (here a directory that is not empty; on a node a
// read-only /etc/kubernetes) beside a working kubelet.conf is asked about
// once per step, and the unchanged answer is no news: nothing tells the
// agent's loops to step again at once (that was a loop without end, found
// by the simulation).
func TestUndeletableBootstrapKubeconfigDoesNotLoop(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	var news, checks atomic.Int32
	f.cfg.OnIdentity = func(Identity) { news.Add(1) }
	b := f.bootstrapper()
	b.cfg.CheckIdentity = func(context.Context, *rest.Config, string) error { checks.Add(1); return nil }
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.cfg.BootstrapKubeconfigPath, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	before, beforeChecks := news.Load(), checks.Load()
	for range 3 {
		if _, err := b.EnsureClient(context.Background(), false); err != nil {
			t.Fatal(err)
		}
	}
	if n := news.Load() - before; n != 0 {
		t.Fatalf("%d identity changes announced for an unchanged kubelet.conf, want 0", n)
	}
	if n := checks.Load() - beforeChecks; n != 3 {
		t.Fatalf("%d identity checks over 3 steps, want 3 (one each, before the token would go)", n)
	}
}
