package approver

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/certagent/certagent/protocol/attestation"
)

var enrollmentGVR = schema.GroupVersionResource{Group: attestation.EnrollmentGroup, Version: attestation.EnrollmentVersion, Resource: attestation.EnrollmentResource}

// enrol writes node's TPMEnrollment listing addrs as the operator would
// (created, or replaced if there is one), deleted when the test ends.
func enrol(t *testing.T, node string, addrs ...string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cp.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
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
	records := dyn.Resource(enrollmentGVR)
	if old, err := records.Get(context.Background(), node, metav1.GetOptions{}); err == nil {
		u.SetResourceVersion(old.GetResourceVersion())
		_, err = records.Update(context.Background(), u, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := records.Create(context.Background(), u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = records.Delete(context.Background(), node, metav1.DeleteOptions{}) })
}

// TestApproverChecksTheEnrolment: a node joined by attestation, whose
// TPMEnrollment lists its addresses, gets a certificate for a listed address;
// an address its Node reports but the enrolment does not list (what a
// compromised node can add to its own Node) is refused as
// NotEnrolledAddress, until the operator lists it. A node with no
// enrolment is decided by its Node alone, as before.
func TestApproverChecksTheEnrolment(t *testing.T) {
	enrol(t, "ap-tpm", "10.88.7.1")
	makeNode(t, "ap-tpm", "InternalIP=10.88.7.1", "ExternalIP=10.88.7.2")
	node := asNode(t, "ap-tpm")
	self := "system:node:ap-tpm"

	listed, _ := postCSR(t, node, request{cn: self, dns: []string{"ap-tpm"}, ips: []string{"10.88.7.1"}})
	if c, _ := waitCondition(t, listed, 20*time.Second); c.Type != certificatesv1.CertificateApproved || c.Reason != "NodeOwnsEveryName" {
		t.Errorf("the listed address: condition %s %s %q", c.Type, c.Reason, c.Message)
	}

	added, _ := postCSR(t, node, request{cn: self, dns: []string{"ap-tpm"}, ips: []string{"10.88.7.1", "10.88.7.2"}})
	waitEventWith(t, added, "NotEnrolledAddress", "not approved, left pending: 10.88.7.2 is not an address TPMEnrollment ap-tpm lists (it lists 10.88.7.1)")
	assertPending(t, added)

	enrol(t, "ap-tpm", "10.88.7.1", "10.88.7.2")
	if c, _ := waitCondition(t, added, 20*time.Second); c.Type != certificatesv1.CertificateApproved {
		t.Errorf("once the enrolment lists 10.88.7.2: condition %s %s %q", c.Type, c.Reason, c.Message)
	}

	makeNode(t, "ap-notpm", "InternalIP=10.88.7.3", "ExternalIP=10.88.7.4")
	plain, _ := postCSR(t, asNode(t, "ap-notpm"), request{cn: "system:node:ap-notpm", dns: []string{"ap-notpm"}, ips: []string{"10.88.7.3", "10.88.7.4"}})
	if c, _ := waitCondition(t, plain, 20*time.Second); c.Type != certificatesv1.CertificateApproved {
		t.Errorf("no enrolment: condition %s %s %q", c.Type, c.Reason, c.Message)
	}
}
