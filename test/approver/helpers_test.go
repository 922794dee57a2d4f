package approver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// makeNode creates the Node name as the admin, reporting addrs
// ("InternalIP=10.0.0.1"), deleted when the test ends.
func makeNode(t *testing.T, name string, addrs ...string) {
	t.Helper()
	ctx := context.Background()
	n, err := cp.Admin.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	setAddresses(t, n, addrs...)
}

// setAddresses writes the Node's status.addresses, as its kubelet would.
func setAddresses(t *testing.T, n *corev1.Node, addrs ...string) {
	t.Helper()
	n.Status.Addresses = nil
	for _, a := range addrs {
		typ, addr, _ := strings.Cut(a, "=")
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(typ), Address: addr})
	}
	if _, err := cp.Admin.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// asNode is a client authenticating as the node name: a client certificate
// for system:node:<name> in system:nodes, as the kubelet's.
func asNode(t *testing.T, name string) kubernetes.Interface {
	t.Helper()
	cfg, err := cp.UserConfig("system:node:"+name, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// request is what a CSR asks for.
type request struct {
	cn       string
	org      []string // [system:nodes] if nil
	dns, ips []string
	seconds  int32
}

// asBootstrapToken is a client authenticating with a fresh bootstrap token
// (system:bootstrap:<id>, which may create CSRs: system:node-bootstrapper).
func asBootstrapToken(t *testing.T) kubernetes.Interface {
	t.Helper()
	tok, err := cp.CreateBootstrapToken(context.Background(), controlplane.TokenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(&rest.Config{Host: cp.URL, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{CAData: cp.CACertPEM}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// servingCSR is a kubelet serving CSR object for r, with a fresh key.
func servingCSR(t *testing.T, r request) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if r.org == nil {
		r.org = []string{"system:nodes"}
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: r.cn, Organization: r.org}, DNSNames: r.dns}
	for _, ip := range r.ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "serving-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName: certificatesv1.KubeletServingSignerName,
			Usages:     []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
		},
	}
	if r.seconds != 0 {
		csr.Spec.ExpirationSeconds = &r.seconds
	}
	return csr
}

// postCSR posts servingCSR(r) with client c (deleted when the test ends)
// and returns its name and the time just before it was sent.
func postCSR(t *testing.T, c kubernetes.Interface, r request) (string, time.Time) {
	t.Helper()
	csr := servingCSR(t, r)
	created := time.Now()
	made, err := c.CertificatesV1().CertificateSigningRequests().Create(context.Background(), csr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the CSR as a node: %v", err)
	}
	t.Cleanup(func() {
		_ = cp.Admin.CertificatesV1().CertificateSigningRequests().Delete(context.Background(), made.Name, metav1.DeleteOptions{})
	})
	return made.Name, created
}

// waitCondition waits for the CSR's Approved or Denied condition, watching,
// and returns it with the time it was seen.
func waitCondition(t *testing.T, name string, timeout time.Duration) (certificatesv1.CertificateSigningRequestCondition, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	csrs := cp.Admin.CertificatesV1().CertificateSigningRequests()
	for ctx.Err() == nil {
		w, err := csrs.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
		if err != nil {
			t.Fatal(err)
		}
		for ev := range w.ResultChan() {
			csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest)
			if !ok {
				continue
			}
			for _, c := range csr.Status.Conditions {
				if c.Type == certificatesv1.CertificateApproved || c.Type == certificatesv1.CertificateDenied {
					seen := time.Now()
					w.Stop()
					return c, seen
				}
			}
		}
	}
	t.Fatalf("CSR %s neither approved nor denied within %v", name, timeout)
	return certificatesv1.CertificateSigningRequestCondition{}, time.Time{}
}

// csrEvents are the Events on the CSR name (in "default", where client-go
// records Events about cluster-scoped objects).
func csrEvents(t *testing.T, name string) []corev1.Event {
	t.Helper()
	list, err := cp.Admin.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.Set{"involvedObject.kind": "CertificateSigningRequest", "involvedObject.name": name}.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitEvent waits for an Event with reason on the CSR and returns it.
func waitEvent(t *testing.T, name, reason string) corev1.Event {
	t.Helper()
	return waitEventWith(t, name, reason, "")
}

// waitEventWith waits for an Event with reason on the CSR whose message
// contains text, and returns it.
func waitEventWith(t *testing.T, name, reason, text string) corev1.Event {
	t.Helper()
	var found corev1.Event
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		for _, e := range csrEvents(t, name) {
			if e.Reason == reason && strings.Contains(e.Message, text) {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no Event %s %q on CSR %s; there are %s", reason, text, name, describe(csrEvents(t, name)))
	}
	return found
}

func describe(events []corev1.Event) string {
	var s []string
	for _, e := range events {
		s = append(s, fmt.Sprintf("%s %s %q (count %d)", e.Type, e.Reason, e.Message, e.Count))
	}
	return "[" + strings.Join(s, "; ") + "]"
}

// assertPending: the CSR has no condition.
func assertPending(t *testing.T, name string) {
	t.Helper()
	csr, err := cp.Admin.CertificatesV1().CertificateSigningRequests().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.Status.Conditions) != 0 {
		t.Errorf("CSR %s is not pending: %+v", name, csr.Status.Conditions)
	}
}

// waitNodeEvent waits a minute for an Event (events.k8s.io) with reason on
// the Node name, as certagent writes them, and returns its note; else the
// test fails with log, certagent's output.
func waitNodeEvent(t *testing.T, name, reason string, log fmt.Stringer) string {
	t.Helper()
	var note string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := cp.Admin.EventsV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil // the next poll
		}
		for _, e := range list.Items {
			if e.Regarding.Kind == "Node" && e.Regarding.Name == name && e.Reason == reason {
				note = e.Note
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on Node %s: %v\n%s", reason, name, err, log)
	}
	return note
}
