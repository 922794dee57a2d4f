package approver

import (
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/certagent/certagent/cluster/enrollment"
	"github.com/certagent/certagent/protocol/attestation"
)

// tpmEnrollment is node's record listing addrs, as the API server serves it.
func tpmEnrollment(t *testing.T, node string, addrs ...string) *unstructured.Unstructured {
	t.Helper()
	rec := attestation.NewTPMEnrollment(node, attestation.EKHash([]byte(node)), "")
	rec.Spec.Addresses = addrs
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	return u
}

// scrapeUntil scrapes m until its text holds every line of want or within
// has passed, and returns the lines still missing.
func scrapeUntil(t *testing.T, m *Metrics, within time.Duration, want ...string) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		text := scrape(t, m)
		var missing []string
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing = append(missing, w)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// scrape is the metrics' text exposition.
func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	return string(body)
}

// TestControllerChecksTheEnrolment: an address the Node reports but the
// node's TPMEnrollment does not list is left pending as NotEnrolledAddress;
// once the operator lists it the CSR is approved; both decisions counted.
func TestControllerChecksTheEnrolment(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: attestation.EnrollmentGroup, Version: attestation.EnrollmentVersion, Resource: attestation.EnrollmentResource}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "TPMEnrollmentList"}, tpmEnrollment(t, "n1", "10.0.0.1"))
	metrics := NewMetrics()
	csr := named(servingCSR(t, func(s *csrSpec) { s.ips = []string{"10.0.0.1", "192.0.2.7"} }), "added")
	h := startControllerWith(t, func(c *Config) {
		c.Enrollments, c.Metrics = enrollment.NewInformer(dyn, 0), metrics
	}, node("n1", "InternalIP=10.0.0.1", "ExternalIP=192.0.2.7"), csr)
	if e := h.event(); !strings.Contains(e, "Warning NotEnrolledAddress not approved, left pending: 192.0.2.7 is not an address TPMEnrollment n1 lists") {
		t.Errorf("Event %q", e)
	}
	if _, err := dyn.Resource(gvr).Update(context.Background(), tpmEnrollment(t, "n1", "10.0.0.1", "192.0.2.7"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := h.condition("added"); c.Type != certificatesv1.CertificateApproved {
		t.Errorf("once the enrolment lists the address: condition %+v", c)
	}
	// The decision is counted after its condition is written, so the
	// scrape waits for it rather than racing the worker.
	for _, missing := range scrapeUntil(t, metrics, 10*time.Second,
		`certagent_approver_decisions_total{reason="NotEnrolledAddress",result="refuse"} 1`,
		`certagent_approver_decisions_total{reason="NodeOwnsEveryName",result="approve"} 1`,
		`certagent_approver_decisions_total{reason="IPOfAnotherNode",result="refuse"} 0`,
		`certagent_approver_decision_duration_seconds_count{result="approve"} 1`,
		`certagent_approver_decision_duration_seconds_count{result="refuse"} 1`,
	) {
		t.Errorf("the metrics lack %s", missing)
	}
}
