package approver

import (
	"context"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
)

// harness runs a Controller on a fake clientset.
type harness struct {
	t      *testing.T
	client *fake.Clientset
	events chan string
	now    time.Time
}

func startController(t *testing.T, deny bool, objs ...any) *harness {
	t.Helper()
	return startControllerWith(t, func(c *Config) { c.Deny = deny }, objs...)
}

// startControllerWith is startController with the Config changed by change.
func startControllerWith(t *testing.T, change func(*Config), objs ...any) *harness {
	t.Helper()
	h := &harness{t: t, client: fake.NewClientset(), now: time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)}
	for _, o := range objs {
		h.create(o)
	}
	rec := record.NewFakeRecorder(100)
	h.events = rec.Events
	cfg := Config{
		Client: h.client, CSRs: NewCSRInformer(h.client, 0), Nodes: NewNodeInformer(h.client, 0),
		Policy: Policy{DNSSuffixes: []string{"nodes.example.com"}}, Recorder: rec,
		Clock: clocktesting.NewFakePassiveClock(h.now),
	}
	change(&cfg)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, 2, func() { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-ready
	return h
}

func (h *harness) create(o any) {
	h.t.Helper()
	var err error
	switch o := o.(type) {
	case *corev1.Node:
		_, err = h.client.CoreV1().Nodes().Create(context.Background(), o, metav1.CreateOptions{})
	case *certificatesv1.CertificateSigningRequest:
		_, err = h.client.CertificatesV1().CertificateSigningRequests().Create(context.Background(), o, metav1.CreateOptions{})
	}
	if err != nil {
		h.t.Fatal(err)
	}
}

// condition waits for the CSR's first condition.
func (h *harness) condition(name string) certificatesv1.CertificateSigningRequestCondition {
	h.t.Helper()
	var cond certificatesv1.CertificateSigningRequestCondition
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		csr, err := h.client.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(csr.Status.Conditions) == 0 {
			return false, nil
		}
		cond = csr.Status.Conditions[0]
		return true, nil
	})
	if err != nil {
		h.t.Fatalf("CSR %s got no condition: %v", name, err)
	}
	return cond
}

// event returns the next Event ("Type Reason message").
func (h *harness) event() string {
	h.t.Helper()
	select {
	case e := <-h.events:
		return e
	case <-time.After(10 * time.Second):
		h.t.Fatal("no Event")
		return ""
	}
}

func (h *harness) noEvent(within time.Duration) {
	h.t.Helper()
	select {
	case e := <-h.events:
		h.t.Errorf("unexpected Event %q", e)
	case <-time.After(within):
	}
}

func named(csr *certificatesv1.CertificateSigningRequest, name string) *certificatesv1.CertificateSigningRequest {
	csr.Name, csr.UID = name, types.UID("uid-"+name)
	return csr
}

func TestControllerApproves(t *testing.T) {
	h := startController(t, false, node("n1", "InternalIP=10.0.0.1"), named(servingCSR(t, nil), "good"))
	c := h.condition("good")
	if c.Type != certificatesv1.CertificateApproved || c.Reason != RuleApproved || !strings.Contains(c.Message, "every name is Node n1's") ||
		!c.LastUpdateTime.Time.Equal(h.now) {
		t.Errorf("condition %+v", c)
	}
	if e := h.event(); !strings.HasPrefix(e, "Normal Approved approved by certagent-cluster approve") {
		t.Errorf("Event %q", e)
	}
}

// TestControllerLeavesPendingUntilTheNodeReportsIt: a refused CSR stays
// pending with one Event for its reason, however often it is decided again,
// and is approved once its Node reports the address.
func TestControllerLeavesPendingUntilTheNodeReportsIt(t *testing.T) {
	csr := named(servingCSR(t, func(s *csrSpec) { s.ips = []string{"10.0.0.9"} }), "new-address")
	h := startController(t, false, node("n1", "InternalIP=10.0.0.1"), csr)
	if e := h.event(); !strings.Contains(e, "Warning IPNotNodeAddress not approved, left pending: 10.0.0.9 is not an address of Node n1") {
		t.Errorf("Event %q", e)
	}
	// Decided again on every Node change and CSR update: no second Event.
	h.create(node("n2", "InternalIP=10.0.0.2"))
	csr.Annotations = map[string]string{"touched": "yes"}
	if _, err := h.client.CertificatesV1().CertificateSigningRequests().Update(context.Background(), csr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.noEvent(300 * time.Millisecond)
	n1 := node("n1", "InternalIP=10.0.0.1", "InternalIP=10.0.0.9")
	if _, err := h.client.CoreV1().Nodes().Update(context.Background(), n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if c := h.condition("new-address"); c.Type != certificatesv1.CertificateApproved {
		t.Errorf("condition %+v", c)
	}
}

func TestControllerDenies(t *testing.T) {
	bad := named(servingCSR(t, func(s *csrSpec) { s.dns = []string{"evil.example.com"} }), "bad")
	early := named(servingCSR(t, func(s *csrSpec) { s.user, s.cn = "system:node:n9", "system:node:n9" }), "early")
	h := startController(t, true, node("n1", "InternalIP=10.0.0.1"), bad, early)
	c := h.condition("bad")
	if c.Type != certificatesv1.CertificateDenied || c.Reason != RuleDNSNotAllowed || !strings.Contains(c.Message, "denied by certagent-cluster approve: DNS name evil.example.com is not Node n1's") {
		t.Errorf("condition %+v", c)
	}
	// A CSR whose Node does not exist yet is never denied: it waits.
	for range 2 {
		if e := h.event(); !strings.Contains(e, "Warning DNSNameNotAllowed denied") && !strings.Contains(e, "Warning NodeNotFound waiting: Node n9 does not exist yet") {
			t.Errorf("Event %q", e)
		}
	}
	h.create(node("n9", "InternalIP=10.0.0.1"))
	if c := h.condition("early"); c.Type != certificatesv1.CertificateDenied || c.Reason != RuleIPOfAnotherNode {
		t.Errorf("once n9 exists (reporting n1's address): condition %+v", c)
	}
}

// TestControllerIgnoresOtherSigners: the informer is filtered by signer, but
// a client CSR that reached it anyway (the fake clientset ignores the field
// selector) is left alone: no condition, no Event.
func TestControllerIgnoresOtherSigners(t *testing.T) {
	other := named(servingCSR(t, func(s *csrSpec) { s.signer = certificatesv1.KubeAPIServerClientKubeletSignerName }), "client")
	h := startController(t, true, node("n1", "InternalIP=10.0.0.1"), other)
	h.noEvent(300 * time.Millisecond)
	csr, err := h.client.CertificatesV1().CertificateSigningRequests().Get(context.Background(), "client", metav1.GetOptions{})
	if err != nil || len(csr.Status.Conditions) != 0 {
		t.Errorf("%v %+v", err, csr.Status.Conditions)
	}
}
