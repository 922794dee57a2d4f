package issuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/certagent/certagent/cluster/attestor"
)

var csrResource = schema.GroupResource{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}

// fixture is an Issuer against a fake API server, with a fake signer that
// signs approved CSRs as kube-controller-manager's csrsigning does.
type fixture struct {
	t      *testing.T
	client *fake.Clientset
	issuer *Issuer
	signs  atomic.Bool // the signer runs

	mu     sync.Mutex
	signed int
}

func (f *fixture) signedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.signed
}

func newFixture(t *testing.T, cfg Config, objs ...runtime.Object) *fixture {
	t.Helper()
	f := &fixture{t: t, client: fake.NewClientset(objs...)}
	f.signs.Store(true)
	cfg.Client = f.client
	cfg.CSRs = NewCSRInformer(f.client, 0)
	iss, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.issuer = iss
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go cfg.CSRs.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), cfg.CSRs.HasSynced) {
		t.Fatal("no sync")
	}
	go f.sign(ctx)
	return f
}

// sign sets a certificate on every approved, unsigned CSR, every 5 ms.
func (f *fixture) sign(ctx context.Context) {
	for ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
		if !f.signs.Load() {
			continue
		}
		list, err := f.client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for i := range list.Items {
			csr := &list.Items[i]
			if _, ok := condition(csr, certificatesv1.CertificateApproved); !ok || len(csr.Status.Certificate) > 0 {
				continue
			}
			csr.Status.Certificate = signedFor(f.t, csr.Spec.Request)
			if _, err := f.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err == nil {
				f.mu.Lock()
				f.signed++
				f.mu.Unlock()
			}
		}
	}
}

func signedFor(t *testing.T, request []byte) []byte {
	b, _ := pem.Decode(request)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Error(err)
		return nil
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: csr.Subject, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, key)
	if err != nil {
		t.Error(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func request(t *testing.T, node string, expSecs int32) attestor.IssueRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return attestor.IssueRequest{NodeName: node, EKHash: "sha256:" + strings.Repeat("ab", 32), CSR: csr,
		CSRPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), ExpirationSeconds: expSecs}
}

func (f *fixture) csrs() []certificatesv1.CertificateSigningRequest {
	f.t.Helper()
	list, err := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return list.Items
}

func TestIssueCreatesApprovesAndWaits(t *testing.T) {
	f := newFixture(t, Config{MaxExpiration: 2 * time.Hour})
	req := request(t, "node-a", 3600)
	cert, err := f.issuer.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(cert); b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("got %q, want the signer's certificate", cert)
	}
	csrs := f.csrs()
	if len(csrs) != 1 {
		t.Fatalf("%d CSRs, want 1", len(csrs))
	}
	c := csrs[0]
	if !strings.HasPrefix(c.Name, NamePrefix) || c.Labels[ManagedByLabel] != ManagedBy ||
		c.Annotations[NodeAnnotation] != "node-a" || c.Annotations[EKHashAnnotation] != req.EKHash {
		t.Errorf("CSR metadata %+v", c.ObjectMeta)
	}
	if c.Spec.SignerName != "kubernetes.io/kube-apiserver-client-kubelet" || *c.Spec.ExpirationSeconds != 3600 ||
		len(c.Spec.Usages) != 2 || c.Spec.Usages[0] != certificatesv1.UsageDigitalSignature || c.Spec.Usages[1] != certificatesv1.UsageClientAuth {
		t.Errorf("CSR spec %+v", c.Spec)
	}
	if b, _ := pem.Decode(c.Spec.Request); b == nil || string(b.Bytes) != string(req.CSR.Raw) {
		t.Error("the CSR object does not carry the node's request")
	}
	a, ok := condition(&c, certificatesv1.CertificateApproved)
	if !ok || a.Reason != "AttestedByTPM" || !strings.Contains(a.Message, req.EKHash) || !strings.Contains(a.Message, "node-a") {
		t.Errorf("approval %+v, want reason AttestedByTPM naming the EK and the node", a)
	}
}

func TestIssueRetryFindsItsCSR(t *testing.T) {
	f := newFixture(t, Config{})
	req := request(t, "node-a", 0)
	first, err := f.issuer.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.issuer.Issue(context.Background(), req)
	if err != nil {
		t.Fatalf("retrying the same request: %v", err)
	}
	if string(first) != string(again) || len(f.csrs()) != 1 || f.signedCount() != 1 {
		t.Errorf("a retry made %d CSRs, %d signatures; want the one CSR and its certificate", len(f.csrs()), f.signedCount())
	}
	// The same key asking for another lifetime is another request.
	if _, err := f.issuer.Issue(context.Background(), attestor.IssueRequest{NodeName: req.NodeName, EKHash: req.EKHash, CSR: req.CSR, CSRPEM: req.CSRPEM, ExpirationSeconds: 900}); err != nil {
		t.Fatal(err)
	}
	if len(f.csrs()) != 2 {
		t.Errorf("%d CSRs, want a second for another lifetime", len(f.csrs()))
	}
}

func TestIssueApprovesAnAdoptedPendingCSR(t *testing.T) {
	// The service made the CSR, then stopped before approving it.
	req := request(t, "node-a", 0)
	pending := desired(req, 0)
	f := newFixture(t, Config{}, pending)
	if _, err := f.issuer.Issue(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if c := f.csrs(); len(c) != 1 || len(c[0].Status.Conditions) != 1 {
		t.Errorf("want the one CSR approved once: %+v", c)
	}
}

func TestIssueRefusals(t *testing.T) {
	req := request(t, "node-a", 0)
	other := desired(request(t, "node-a", 0), 0)
	other.Name = desired(req, 0).Name // a squatter of our name
	denied := desired(req, 0)
	denied.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "ByAdmin", Message: "no"}}
	for _, tc := range []struct {
		name     string
		existing runtime.Object
		reactor  k8stesting.ReactionFunc
		verb     string
		signs    bool
		want     []string
	}{
		{"another request under our name", other, nil, "", true, []string{"asks for something else", "kubectl delete csr"}},
		{"our request, denied", denied, nil, "", true, []string{"was denied", "ByAdmin"}},
		{"create forbidden", nil, forbid("create"), "create", true, []string{"missing RBAC", "create on certificates.k8s.io certificatesigningrequests"}},
		{"approval forbidden", nil, forbid("update"), "update", true, []string{"missing RBAC", "approve on certificates.k8s.io signers kubernetes.io/kube-apiserver-client-kubelet"}},
		{"never signed", nil, nil, "", false, []string{"approved, not signed", "csrsigning"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var objs []runtime.Object
			if tc.existing != nil {
				objs = append(objs, tc.existing.DeepCopyObject())
			}
			f := newFixture(t, Config{Timeout: 300 * time.Millisecond}, objs...)
			f.signs.Store(tc.signs)
			if tc.reactor != nil {
				f.client.PrependReactor(tc.verb, "certificatesigningrequests", tc.reactor)
			}
			_, err := f.issuer.Issue(context.Background(), req)
			if err == nil {
				t.Fatal("issued")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if f.signedCount() != 0 {
				t.Error("a certificate was signed")
			}
		})
	}
}

func forbid(verb string) k8stesting.ReactionFunc {
	return func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(csrResource, "x", errors.New("user cannot "+verb))
	}
}

func TestIssueRetriesAnApprovalConflict(t *testing.T) {
	f := newFixture(t, Config{})
	conflicts := 0
	f.client.PrependReactor("update", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "approval" && conflicts == 0 {
			conflicts++
			return true, nil, apierrors.NewConflict(csrResource, "x", errors.New("modified"))
		}
		return false, nil, nil
	})
	if _, err := f.issuer.Issue(context.Background(), request(t, "node-a", 0)); err != nil {
		t.Fatalf("after one conflict: %v", err)
	}
	if conflicts != 1 {
		t.Error("no conflict was met")
	}
}

func TestLifetime(t *testing.T) {
	for _, tc := range []struct {
		name  string
		asked int32
		max   time.Duration
		want  int32 // 0: none (the signer's default)
	}{
		{"neither", 0, 0, 0},
		{"the node's, no cap", 3600, 0, 3600},
		{"the node's, under the cap", 3600, 2 * time.Hour, 3600},
		{"the node's, over the cap", 86400, 2 * time.Hour, 7200},
		{"the cap when the node asks none", 0, 2 * time.Hour, 7200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := lifetime(tc.asked, tc.max)
			if (got == nil) != (tc.want == 0) || got != nil && *got != tc.want {
				t.Errorf("lifetime(%d, %v) = %v, want %d", tc.asked, tc.max, got, tc.want)
			}
		})
	}
}

func TestCSRName(t *testing.T) {
	a, b := []byte("request a"), []byte("request b")
	h, d := int32(3600), int32(86400)
	if csrName(a, nil) != csrName(a, nil) || csrName(a, &h) != csrName(a, &h) {
		t.Error("the same request gets two names")
	}
	names := map[string]bool{csrName(a, nil): true, csrName(b, nil): true, csrName(a, &h): true, csrName(a, &d): true}
	if len(names) != 4 {
		t.Error("two different requests share a name")
	}
	if n := csrName(a, nil); len(n) != len(NamePrefix)+64 || !strings.HasPrefix(n, NamePrefix) {
		t.Errorf("name %q", n)
	}
}

func TestCheckAdoptable(t *testing.T) {
	want := desired(request(t, "node-a", 3600), 0)
	cond := func(c *certificatesv1.CertificateSigningRequest, typ certificatesv1.RequestConditionType, st corev1.ConditionStatus) {
		c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{Type: typ, Status: st})
	}
	for _, tc := range []struct {
		name   string
		change func(*certificatesv1.CertificateSigningRequest)
		ok     bool
	}{
		{"the same, pending", func(*certificatesv1.CertificateSigningRequest) {}, true},
		{"the same, approved", func(c *certificatesv1.CertificateSigningRequest) {
			cond(c, certificatesv1.CertificateApproved, corev1.ConditionTrue)
		}, true},
		{"the same, another requester", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.Username = "someone" }, true},
		{"a false Denied condition", func(c *certificatesv1.CertificateSigningRequest) {
			cond(c, certificatesv1.CertificateDenied, corev1.ConditionFalse)
		}, true},
		{"another request", func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Request = desired(request(t, "node-a", 3600), 0).Spec.Request
		}, false},
		{"another signer", func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.SignerName = "kubernetes.io/kube-apiserver-client"
		}, false},
		{"more usages", func(c *certificatesv1.CertificateSigningRequest) {
			c.Spec.Usages = append(c.Spec.Usages, certificatesv1.UsageServerAuth)
		}, false},
		{"no lifetime", func(c *certificatesv1.CertificateSigningRequest) { c.Spec.ExpirationSeconds = nil }, false},
		{"another lifetime", func(c *certificatesv1.CertificateSigningRequest) { v := int32(7200); c.Spec.ExpirationSeconds = &v }, false},
		{"denied", func(c *certificatesv1.CertificateSigningRequest) {
			cond(c, certificatesv1.CertificateDenied, corev1.ConditionTrue)
		}, false},
		{"failed", func(c *certificatesv1.CertificateSigningRequest) {
			cond(c, certificatesv1.CertificateFailed, corev1.ConditionTrue)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			existing := want.DeepCopy()
			tc.change(existing)
			if err := checkAdoptable(existing, want); (err == nil) != tc.ok {
				t.Errorf("checkAdoptable = %v, want ok=%t", err, tc.ok)
			}
		})
	}
}
