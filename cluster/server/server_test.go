package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	"github.com/certagent/certagent/cluster/attestor"
	"github.com/certagent/certagent/protocol/attestation"
)

// ssarClient answers SelfSubjectAccessReviews: allowed unless deny says no.
func ssarClient(deny func(authorizationv1.ResourceAttributes) bool) *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview)
		r.Status.Allowed = !deny(*r.Spec.ResourceAttributes)
		return true, r, nil
	})
	return c
}

func TestCheckPermissions(t *testing.T) {
	if err := checkPermissions(context.Background(), ssarClient(func(authorizationv1.ResourceAttributes) bool { return false })); err != nil {
		t.Fatalf("all granted: %v", err)
	}
	err := checkPermissions(context.Background(), ssarClient(func(a authorizationv1.ResourceAttributes) bool {
		return a.Verb == "approve" || a.Resource == "events" && a.Verb == "patch"
	}))
	for _, want := range []string{
		"missing RBAC",
		"approve on certificates.k8s.io signers kubernetes.io/kube-apiserver-client-kubelet",
		"patch on events in namespace default",
		"packaging/cluster/20-rbac.yaml",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "create on certificates.k8s.io certificatesigningrequests") {
		t.Errorf("error %v names a permission the service has", err)
	}

	failing := fake.NewClientset()
	failing.PrependReactor("create", "selfsubjectaccessreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if err := checkPermissions(context.Background(), failing); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a failing review: %v", err)
	}
}

func TestCheckCRD(t *testing.T) {
	c := fake.NewClientset()
	if err := checkCRD(c); err == nil || !strings.Contains(err.Error(), "packaging/cluster/10-crd.yaml") {
		t.Errorf("no CRD: %v, want the command that installs it", err)
	}
	c.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
		GroupVersion: attestation.EnrollmentAPIVersion,
		APIResources: []metav1.APIResource{{Name: attestation.EnrollmentResource, Kind: attestation.EnrollmentKind}},
	}}
	if err := checkCRD(c); err != nil {
		t.Errorf("CRD served: %v", err)
	}
}

type fakeStore struct {
	refs map[string][]corev1.ObjectReference
}

func (f fakeStore) References(h string) []corev1.ObjectReference { return f.refs[h] }
func (f fakeStore) Counts() (int, int)                           { return len(f.refs), 0 }

func TestObserver(t *testing.T) {
	enrolled := attestation.EKHash([]byte("a"))
	store := fakeStore{refs: map[string][]corev1.ObjectReference{enrolled: {{Kind: "TPMEnrollment", Name: "node-a"}}}}
	rec := record.NewFakeRecorder(10)
	o := &observer{metrics: newMetrics("test", store), recorder: rec, refs: store}

	o.Observe(attestor.Outcome{Step: attestor.StepBegin, Node: "node-a", ClaimedNode: "node-a", EKHash: enrolled})
	o.Observe(attestor.Outcome{Step: attestor.StepFinish, Node: "node-a", ClaimedNode: "node-a", EKHash: enrolled})
	o.Observe(attestor.Outcome{Step: attestor.StepBegin, Reason: attestation.ReasonNameMismatch, Node: "node-a", ClaimedNode: "node-b",
		EKHash: enrolled, Detail: `this TPM is enrolled as node "node-a", not "node-b"`})
	o.Observe(attestor.Outcome{Step: attestor.StepFinish, Reason: attestation.ReasonIssueFailed, Node: "node-a", ClaimedNode: "node-a",
		EKHash: enrolled, Detail: "issuing failed", Cause: errors.New("missing RBAC: approve")})
	o.Observe(attestor.Outcome{Step: attestor.StepBegin, Reason: attestation.ReasonUnknownEK, ClaimedNode: "node-x", EKHash: attestation.EKHash([]byte("x"))})

	for _, tc := range []struct {
		result, reason string
		want           float64
	}{
		{resultChallenged, "", 1}, {resultIssued, "", 1},
		{resultRefused, "name_mismatch", 1}, {resultRefused, "issue_failed", 1}, {resultRefused, "unknown_ek", 1},
		{resultRefused, "replayed", 0},
	} {
		if got := testutil.ToFloat64(o.metrics.attempts.WithLabelValues(tc.result, tc.reason)); got != tc.want {
			t.Errorf("attempts{result=%s,reason=%s} = %v, want %v", tc.result, tc.reason, got, tc.want)
		}
	}
	var events []string
	for len(rec.Events) > 0 {
		events = append(events, <-rec.Events)
	}
	want := []string{
		"Normal Attested TPM " + enrolled + " proved it is node node-a",
		"Warning AttestationRefused name_mismatch at begin (TPM " + enrolled + `, node "node-b" claimed): this TPM is enrolled as node "node-a"`,
		"Warning AttestationRefused issue_failed at finish",
	}
	if len(events) != len(want) {
		t.Fatalf("events %q, want %d (none for a begun exchange or an unenrolled TPM)", events, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(events[i], w) {
			t.Errorf("event %q, want it to start %q", events[i], w)
		}
	}
	if !strings.Contains(events[2], "cause: missing RBAC: approve") {
		t.Errorf("the issue failure's Event %q does not give its cause", events[2])
	}
}

// writePair writes a self-signed certificate and key for cn.
func writePair(t *testing.T, dir, cn string) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func servedCN(t *testing.T, s *servingCert) string {
	t.Helper()
	c, err := s.getCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	return leaf.Subject.CommonName
}

func TestServingCertReloads(t *testing.T) {
	dir := t.TempDir()
	if _, err := loadServingCert(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), zap.NewNop()); err == nil ||
		!strings.Contains(err.Error(), "init-tls") {
		t.Errorf("no files: %v, want a pointer to init-tls", err)
	}
	certFile, keyFile := writePair(t, dir, "first")
	s, err := loadServingCert(certFile, keyFile, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	writePair(t, dir, "second")
	if got := servedCN(t, s); got != "first" {
		t.Errorf("reloaded before checkEvery: %s", got)
	}
	s.checked = time.Time{}
	if got := servedCN(t, s); got != "second" {
		t.Errorf("served %s after the files changed, want second", got)
	}
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.checked = time.Time{}
	if got := servedCN(t, s); got != "second" {
		t.Errorf("served %s after a broken change, want the last good one", got)
	}
}

func TestLoadManufacturerCAs(t *testing.T) {
	dir := t.TempDir()
	certFile, _ := writePair(t, dir, "root")
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("no certificates here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cas, err := loadManufacturerCAs("", ""); cas != nil || err != nil {
		t.Errorf("policy off: %v, %v", cas, err)
	}
	if cas, err := loadManufacturerCAs(certFile, certFile); err != nil || cas == nil || cas.Roots == nil || cas.Intermediates == nil {
		t.Errorf("roots and intermediates: %v, %v", cas, err)
	}
	for name, args := range map[string][2]string{
		"no certificate in the roots": {empty, ""},
		"intermediates without roots": {"", certFile},
		"a missing roots file":        {filepath.Join(dir, "missing.pem"), ""},
	} {
		if _, err := loadManufacturerCAs(args[0], args[1]); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
