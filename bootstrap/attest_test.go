package bootstrap

import (
	"context"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/bootstrap/kubeconfig/kubeconfigtest"
	"github.com/certagent/certagent/protocol/attestation"
)

// fakeService stands in for the attestation service: it records each CSR
// it is sent and issues it with the cluster CA, unless refuse says otherwise.
type fakeService struct {
	f      *fixture
	csrs   [][]byte
	refuse func(call int) error
}

func (s *fakeService) attest(_ context.Context, csrPEM []byte) ([]byte, error) {
	s.csrs = append(s.csrs, csrPEM)
	if s.refuse != nil {
		if err := s.refuse(len(s.csrs)); err != nil {
			return nil, err
		}
	}
	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	node := strings.TrimPrefix(csr.Subject.CommonName, "system:node:")
	now := s.f.cfg.Clock.Now() // the node's clock, which a test may move
	return s.f.ca.issue(s.f.t, csr.PublicKey, Request{Kind: Client, NodeName: node}, func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = now.Add(-5*time.Minute), now.Add(time.Hour)
	}), nil
}

// attestingFixture is a node with attestation configured and no bootstrap
// kubeconfig.
func attestingFixture(t *testing.T) (*fixture, *fakeService) {
	f := newFixture(t)
	f.autoApprove()
	_ = os.Remove(f.cfg.BootstrapKubeconfigPath)
	s := &fakeService{f: f}
	f.cfg.Attestation = &Attestation{Attest: s.attest, Service: "https://attest.example:31443", Server: "https://api.example:6443", CAFile: filepath.Join(f.dir, "ca.crt")}
	return f, s
}

// TestAttestationBootstrapsWithoutAToken: with no bootstrap kubeconfig, the
// node's TPM gets it its client certificate: the CSR is made on the node,
// kubelet.conf reaches the API server and CA of the configuration, is proven
// from disk, and `certagent status` can say how the certificate was obtained.
func TestAttestationBootstrapsWithoutAToken(t *testing.T) {
	f, s := attestingFixture(t)
	b := f.bootstrapper()
	res, err := b.EnsureClient(context.Background(), false)
	if err != nil || !res.Stored {
		t.Fatalf("EnsureClient = stored %v, %v", res.Stored, err)
	}
	if len(s.csrs) != 1 || f.creates.Load() != 0 {
		t.Fatalf("%d attestations, %d CSRs posted with a token; want 1 and 0", len(s.csrs), f.creates.Load())
	}
	rc, err := clientcmd.BuildConfigFromFlags("", f.cfg.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://api.example:6443" || rc.CAFile != filepath.Join(f.dir, "ca.crt") || rc.CertFile != CurrentPath(f.cfg.CertDir, Client) {
		t.Fatalf("kubelet.conf: server %q, CA %q, certificate %q", rc.Host, rc.CAFile, rc.CertFile)
	}
	if got := ObtainedBy(f.cfg.CertDir); got != SourceAttestation {
		t.Fatalf("ObtainedBy = %q, want %q", got, SourceAttestation)
	}
	for _, p := range []string{PendingKeyPath(f.cfg.CertDir, Client), pendingCSRPath(f.cfg.CertDir, Client)} {
		if exists(p) {
			t.Errorf("%s left after the certificate was stored", p)
		}
	}
}

// TestAttestationRetrySendsTheSameRequest: an exchange that fails (the
// service restarting) is retried with the very same CSR, so the service
// finds the CSR it may already have made: one request, one certificate.
func TestAttestationRetrySendsTheSameRequest(t *testing.T) {
	f, s := attestingFixture(t)
	s.refuse = func(call int) error {
		if call == 1 {
			return &attestation.Error{Reason: attestation.ReasonUnknownSession, Message: "the service restarted"}
		}
		return nil
	}
	b := f.bootstrapper()
	_, err := b.EnsureClient(context.Background(), false)
	if err == nil || !IsTransient(err) || !strings.Contains(err.Error(), "https://attest.example:31443") {
		t.Fatalf("first attempt: %v, want a transient error naming the service", err)
	}
	if _, err := b.EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if len(s.csrs) != 2 || string(s.csrs[0]) != string(s.csrs[1]) {
		t.Fatalf("%d attestations, the same CSR each time: %v", len(s.csrs), len(s.csrs) == 2 && string(s.csrs[0]) == string(s.csrs[1]))
	}
}

// TestAttestationRefusedWritesNothing: a refusal that waiting cannot cure
// (the TPM is not enrolled) is an error that says so; no certificate and no
// kubelet.conf are written.
func TestAttestationRefusedWritesNothing(t *testing.T) {
	f, s := attestingFixture(t)
	s.refuse = func(int) error {
		return &attestation.Error{Reason: attestation.ReasonUnknownEK, Message: "no node is enrolled with this EK"}
	}
	_, err := f.bootstrapper().EnsureClient(context.Background(), false)
	var refusal *attestation.Error
	if !errors.As(err, &refusal) || refusal.Reason != attestation.ReasonUnknownEK || IsTransient(err) {
		t.Fatalf("EnsureClient: %v, want the service's unknown_ek refusal, not transient", err)
	}
	for _, p := range []string{f.cfg.KubeconfigPath, CurrentPath(f.cfg.CertDir, Client), sourcePath(f.cfg.CertDir)} {
		if exists(p) {
			t.Errorf("%s written after a refusal", p)
		}
	}
}

// TestCredentialSourceOrder: attestation is tried before a bootstrap
// kubeconfig unless AfterToken; the other is the fallback when the first
// fails, and a bootstrap kubeconfig left beside a kubelet.conf that works is
// removed either way.
func TestCredentialSourceOrder(t *testing.T) {
	unreachable := func(int) error { return &attestation.Error{Reason: attestation.ReasonBusy, Message: "busy"} }
	for _, tc := range []struct {
		name        string
		afterToken  bool
		refuse      func(int) error
		attestCalls int
		tokenCSRs   int32
		source      string
	}{
		{"attestation first", false, nil, 1, 0, SourceAttestation},
		{"attestation first, failing: the token", false, unreachable, 1, 1, SourceToken},
		{"the token first", true, nil, 0, 1, SourceToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, s := attestingFixture(t)
			kubeconfigtest.WriteFile(t, f.dir, "bootstrap-kubelet.conf", kubeconfigtest.Bootstrap)
			f.cfg.Attestation.AfterToken = tc.afterToken
			s.refuse = tc.refuse
			if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
				t.Fatal(err)
			}
			if len(s.csrs) != tc.attestCalls || f.creates.Load() != tc.tokenCSRs {
				t.Fatalf("%d attestations and %d token CSRs, want %d and %d", len(s.csrs), f.creates.Load(), tc.attestCalls, tc.tokenCSRs)
			}
			if got := ObtainedBy(f.cfg.CertDir); got != tc.source {
				t.Fatalf("ObtainedBy = %q, want %q", got, tc.source)
			}
			if exists(f.cfg.BootstrapKubeconfigPath) {
				t.Fatal("bootstrap kubeconfig left beside a kubelet.conf that works")
			}
		})
	}
}

// TestExpiredNodeReattests: a node whose client certificate expired while
// it was off, with no bootstrap kubeconfig, proves itself again and
// recovers with no person.
func TestExpiredNodeReattests(t *testing.T) {
	f, s := attestingFixture(t)
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f.cfg.Clock.(*clocktesting.FakeClock).Step(2 * time.Hour) // off past the certificate's expiry
	b := f.bootstrapper()
	res, err := b.EnsureClient(context.Background(), false)
	if err != nil || !res.Stored || len(s.csrs) != 2 {
		t.Fatalf("EnsureClient = stored %v, %v; %d attestations, want 2", res.Stored, err, len(s.csrs))
	}
	if _, err := b.LoadNode(); err != nil {
		t.Fatalf("kubelet.conf after re-attesting: %v", err)
	}
}
