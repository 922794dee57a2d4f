package attestation

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/protocol/attestation"
	"github.com/certagent/certagent/test/attestsvc"
)

// node is a simulated node: its own software TPM, and a kubelet client key
// and CSR made on the node (kept, as certagent keeps them, until issued).
type node struct {
	t      *testing.T
	name   string
	tpm    *swtpm.TPM
	key    *ecdsa.PrivateKey
	csrPEM []byte
}

func newNode(t *testing.T, name string, maker *swtpm.CA) *node {
	t.Helper()
	n := &node{t: t, name: name, tpm: swtpm.StartTest(t, maker)}
	n.newCSR("system:node:" + name)
	return n
}

// newCSR makes a new key and a kubelet client CSR for cn.
func (n *node) newCSR(cn string) {
	n.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		n.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		n.t.Fatal(err)
	}
	n.key, n.csrPEM = key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// ekHash is what an operator enrols for this node's TPM.
func (n *node) ekHash() string {
	n.t.Helper()
	info, err := tpm.Enrollment(n.tpm.Path())
	if err != nil {
		n.t.Fatal(err)
	}
	return info.EKHash
}

// enrol applies the node's TPMEnrollment with kubectl, as an operator would
// pipe `certagent attest enroll` into it (the record is the shared
// protocol/attestation type, as YAML), under the name as.
func (n *node) enrol(as string) {
	n.t.Helper()
	info, err := tpm.Enrollment(n.tpm.Path())
	if err != nil {
		n.t.Fatal(err)
	}
	enrolRecord(n.t, attestation.NewTPMEnrollment(as, info.EKHash, info.EKCertificateIssuer))
}

func enrolRecord(t *testing.T, rec attestation.TPMEnrollment) {
	t.Helper()
	doc, err := yaml.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, string(doc), "apply", "-f", "-")
	waitEnrollmentsSeen(t)
}

func unenrol(t *testing.T, name string) {
	t.Helper()
	kubectl(t, "", "delete", "tpmenrollment", name)
	waitEnrollmentsSeen(t)
}

// waitEnrollmentsSeen waits until every running service's cache holds as
// many records as the API server.
func waitEnrollmentsSeen(t *testing.T) {
	t.Helper()
	var list struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal([]byte(kubectl(t, "", "get", "tpmenrollments", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	for _, s := range runningServices() {
		seen := false
		for deadline := time.Now().Add(10 * time.Second); !seen && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			seen = int(s.metric(t, "certagent_attestation_enrollments")) == len(list.Items)
		}
		if !seen {
			t.Fatalf("the cache of service %s does not hold the %d TPMEnrollments", s.name, len(list.Items))
		}
	}
}

// attest runs certagent's node half against s for the node's CSR.
func (n *node) attest(s *service, expirationSeconds int32) ([]byte, error) {
	n.t.Helper()
	a, err := tpm.New(tpm.Config{TPMPath: n.tpm.Path(), ServiceURL: s.url, ServiceCAs: serviceCAPool(),
		NodeName: n.name, ExpirationSeconds: expirationSeconds})
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return a.Attest(ctx, n.csrPEM)
}

// mustAttest attests and returns the node's certificate.
func (n *node) mustAttest(s *service, expirationSeconds int32) *x509.Certificate {
	n.t.Helper()
	chain, err := n.attest(s, expirationSeconds)
	if err != nil {
		n.t.Fatalf("attesting %s: %v", n.name, err)
	}
	b, _ := pem.Decode(chain)
	if b == nil {
		n.t.Fatalf("the chain %q is not PEM", chain)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		n.t.Fatal(err)
	}
	return leaf
}

func serviceCAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM([]byte(serviceCA.PEM))
	return p
}

func pemCert(c *x509.Certificate) []byte { return attestsvc.PEMCert(c) }

// post sends a protocol message as a node would and returns the status,
// the refusal (nil on 200) and the body.
func post(t *testing.T, s *service, path string, msg any) (int, *attestation.Error, []byte) {
	t.Helper()
	body, _ := json.Marshal(msg)
	rsp, err := s.client().Post(s.url+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	data, _ := io.ReadAll(rsp.Body)
	if rsp.StatusCode == http.StatusOK {
		return rsp.StatusCode, nil, data
	}
	var r attestation.Error
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("refusal %s: %v", data, err)
	}
	return rsp.StatusCode, &r, data
}

// csrsFor are the CSRs the service made for node.
func csrsFor(t *testing.T, node string) []certificatesv1.CertificateSigningRequest {
	t.Helper()
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(),
		metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=certagent-cluster"})
	if err != nil {
		t.Fatal(err)
	}
	var out []certificatesv1.CertificateSigningRequest
	for _, c := range list.Items {
		if c.Annotations["attestation.certagent.io/node"] == node {
			out = append(out, c)
		}
	}
	return out
}

// allCSRs counts every CSR in the cluster.
func allCSRs(t *testing.T) int {
	t.Helper()
	list, err := cp.Admin.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// enrollmentEvents are the Events on the TPMEnrollment name, as
// "Type Reason Message".
func enrollmentEvents(t *testing.T, name string) []string {
	t.Helper()
	var list struct {
		Items []struct {
			Type, Reason, Message string
		} `json:"items"`
	}
	out := kubectl(t, "", "get", "events", "-n", "default", "-o", "json",
		"--field-selector", "involvedObject.kind=TPMEnrollment,involvedObject.name="+name)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var evs []string
	for _, e := range list.Items {
		evs = append(evs, e.Type+" "+e.Reason+" "+e.Message)
	}
	return evs
}

// waitEvent waits until the TPMEnrollment name has an Event containing all of want.
func waitEvent(t *testing.T, name string, want ...string) string {
	t.Helper()
	var evs []string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		evs = enrollmentEvents(t, name)
	next:
		for _, e := range evs {
			for _, w := range want {
				if !strings.Contains(e, w) {
					continue next
				}
			}
			return e
		}
	}
	t.Fatalf("no Event on TPMEnrollment %s with %q; got %q", name, want, evs)
	return ""
}

// refusalLogged finds the service's "attestation refused" line for reason
// and the claimed node, and returns it.
func refusalLogged(t *testing.T, s *service, reason attestation.Reason, claimed string) map[string]any {
	t.Helper()
	for _, l := range s.logLines() {
		if l["msg"] == "attestation refused" && l["reason"] == string(reason) && l["claimed_node"] == claimed {
			return l
		}
	}
	t.Fatalf("no log line \"attestation refused\" with reason %s for claimed node %s in %s", reason, claimed, s.logPath)
	return nil
}

func describe(v any) string { return fmt.Sprintf("%+v", v) }
