package attestation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/protocol/attestation"
	"github.com/certagent/certagent/test/controlplane"
)

// TestAttestationManifests: every manifest in packaging/cluster passes a
// server-side dry run on the real API server (TestMain applied the
// Namespace, CRD and RBAC for real), the Deployment meets the namespace's
// "restricted" Pod Security level, and the CRD's schema refuses a malformed
// EK hash.
func TestAttestationManifests(t *testing.T) {
	out := kubectl(t, "", "apply", "--server-side", "--dry-run=server", "-f", manifests)
	for _, want := range []string{
		"namespace/certagent-system", "customresourcedefinition.apiextensions.k8s.io/tpmenrollments.attestation.certagent.io",
		"serviceaccount/certagent-cluster", "clusterrole.rbac.authorization.k8s.io/certagent-cluster",
		"clusterrolebinding.rbac.authorization.k8s.io/certagent-cluster", "role.rbac.authorization.k8s.io/certagent-cluster-events",
		"rolebinding.rbac.authorization.k8s.io/certagent-cluster-events", "deployment.apps/certagent-cluster",
		"service/certagent-cluster ", "service/certagent-cluster-metrics",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the dry run did not apply %s:\n%s", want, out)
		}
	}
	if strings.Contains(strings.ToLower(out), "warning") {
		t.Errorf("the dry run warns (Pod Security \"restricted\"?):\n%s", out)
	}

	bad := attestation.NewTPMEnrollment("node-x", "sha256:ABC", "")
	doc, _ := json.Marshal(bad)
	if out, err := kubectlCmd(context.Background(), string(doc), "apply", "-f", "-"); err == nil || !strings.Contains(string(out), "spec.ekPublicKeyHash") {
		t.Errorf("a malformed EK hash: %v\n%s", err, out)
	}
	good := attestation.NewTPMEnrollment("node-columns", attestation.EKHash([]byte("x")), "CN=vendor")
	enrolRecord(t, good)
	defer unenrol(t, good.Metadata.Name)
	if out := kubectl(t, "", "get", "tpme", "node-columns", "-o", "wide"); !strings.Contains(out, "EK HASH") || !strings.Contains(out, "EK ISSUER") ||
		!strings.Contains(out, good.Spec.EKPublicKeyHash) {
		t.Errorf("kubectl get tpme -o wide:\n%s", out)
	}
}

// TestAttestationIssuesTheEnrolledNodeAClientCertificate: an enrolled TPM
// gets a client certificate for system:node:<its name> that the API server
// accepts, through one CSR that the service's account made and approved.
func TestAttestationIssuesTheEnrolledNodeAClientCertificate(t *testing.T) {
	n := newNode(t, "tpm-node-a", vendor)
	n.enrol(n.name)
	issued, challenged := svc.attempts(t, "issued", ""), svc.attempts(t, "challenged", "")
	start := time.Now()
	leaf := n.mustAttest(svc, 3600)

	if leaf.Subject.CommonName != "system:node:tpm-node-a" || !slices.Equal(leaf.Subject.Organization, []string{"system:nodes"}) ||
		!n.key.PublicKey.Equal(leaf.PublicKey) {
		t.Errorf("certificate for %v with another key or name", leaf.Subject)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < time.Hour || life > time.Hour+6*time.Minute {
		t.Errorf("lifetime %v, want the hour asked for (and the signer's 5 min backdating)", life)
	}
	if who := selfSubject(t, leaf, n); who.Username != "system:node:tpm-node-a" || !slices.Contains(who.Groups, "system:nodes") {
		t.Errorf("the API server sees %+v", who)
	}

	csrs := csrsFor(t, n.name)
	if len(csrs) != 1 {
		t.Fatalf("%d CSRs for the node, want 1", len(csrs))
	}
	csr := csrs[0]
	approval := approvedCondition(csr)
	if csr.Spec.Username != saUser || approval == nil || approval.Reason != "AttestedByTPM" || !strings.Contains(approval.Message, n.ekHash()) {
		t.Errorf("CSR %s requested by %q, approval %+v; want the service's account, AttestedByTPM naming the EK", csr.Name, csr.Spec.Username, approval)
	}
	if by := approvers(t, csr.Name, start); !slices.Equal(by, []string{saUser}) {
		t.Errorf("the audit log shows the approval by %q, want only the service's account", by)
	}
	waitEvent(t, n.name, "Normal Attested", n.ekHash())
	if svc.attempts(t, "issued", "") != issued+1 || svc.attempts(t, "challenged", "") != challenged+1 {
		t.Errorf("attempts not counted: issued %v→%v", issued, svc.attempts(t, "issued", ""))
	}

	// The node lost the answer and asks again with the same CSR: the same
	// certificate, and still one CSR.
	if again := n.mustAttest(svc, 3600); again.SerialNumber.Cmp(leaf.SerialNumber) != 0 || len(csrsFor(t, n.name)) != 1 {
		t.Errorf("a retry of the same CSR made another certificate (%d CSRs)", len(csrsFor(t, n.name)))
	}
	// A new key asking for a day gets the service's cap, 2 h.
	n.newCSR("system:node:" + n.name)
	capped := n.mustAttest(svc, 86400)
	if life := capped.NotAfter.Sub(capped.NotBefore); life < 2*time.Hour || life > 2*time.Hour+6*time.Minute {
		t.Errorf("lifetime %v, want the service's --max-expiration 2h", life)
	}
}

// selfSubject is who the API server says the node is with its certificate.
func selfSubject(t *testing.T, leaf *x509.Certificate, n *node) authenticationv1.UserInfo {
	t.Helper()
	keyDER, err := x509.MarshalECPrivateKey(n.key)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(&rest.Config{Host: cp.URL, TLSClientConfig: rest.TLSClientConfig{
		CAData: cp.CACertPEM, CertData: pemCert(leaf), KeyData: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("the API server refuses the node's certificate: %v", err)
	}
	return r.Status.UserInfo
}

func approvedCondition(csr certificatesv1.CertificateSigningRequest) *certificatesv1.CertificateSigningRequestCondition {
	for i, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved {
			return &csr.Status.Conditions[i]
		}
	}
	return nil
}

// approvers are the users the audit log shows updating the CSR's approval
// since from (the audit policy records service accounts and nodes; the
// controller-manager, which is neither, never appears: the CSR is approved
// once, by the service, as its condition's reason says).
func approvers(t *testing.T, csrName string, from time.Time) []string {
	t.Helper()
	var users []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(users) == 0; time.Sleep(100 * time.Millisecond) {
		evs, err := cp.AuditEvents(from, time.Now().Add(time.Second), func(e controlplane.AuditEvent) bool {
			return e.ObjectRef != nil && e.ObjectRef.Name == csrName && e.ObjectRef.Subresource == "approval" && e.Verb == "update"
		})
		if err != nil {
			t.Fatal(err)
		}
		users = users[:0]
		for _, e := range evs {
			if e.ResponseStatus != nil && e.ResponseStatus.Code == 200 {
				users = append(users, e.User.Username)
			}
		}
	}
	return users
}

// TestAttestationRefusals: each way in the threat model is refused with its
// reason, logged with the claimed name and the EK hash, counted, recorded as
// an Event when the TPM is enrolled, and leaves no CSR.
func TestAttestationRefusals(t *testing.T) {
	t.Run("an unenrolled EK", func(t *testing.T) {
		n := newNode(t, "tpm-stranger", vendor)
		r := expectRefusal(t, attestation.ReasonUnknownEK, n.name, func() error { _, err := n.attest(svc, 0); return err })
		if r["ek_hash"] != n.ekHash() {
			t.Errorf("logged EK hash %v, want %s", r["ek_hash"], n.ekHash())
		}
		if evs := enrollmentEvents(t, n.name); len(evs) != 0 {
			t.Errorf("Events %q on a TPMEnrollment that does not exist", evs)
		}
	})
	t.Run("an EK certificate from an untrusted manufacturer", func(t *testing.T) {
		n := newNode(t, "tpm-rogue", swtpm.NewTestCA(t, "rogue"))
		n.enrol(n.name) // enrolled, but its maker is not among --manufacturer-roots
		expectRefusal(t, attestation.ReasonUntrustedEKCA, n.name, func() error { _, err := n.attest(svc, 0); return err })
		waitEvent(t, n.name, "Warning AttestationRefused", "untrusted_ek_ca", n.ekHash())
	})
	t.Run("an enrolled TPM asking for another node's name", func(t *testing.T) {
		a, b := newNode(t, "tpm-a", vendor), newNode(t, "tpm-b", vendor)
		a.enrol(a.name)
		b.enrol(b.name)
		thief := &node{t: t, name: b.name, tpm: a.tpm}
		thief.newCSR("system:node:" + b.name)
		expectRefusal(t, attestation.ReasonNameMismatch, b.name, func() error { _, err := thief.attest(svc, 0); return err })
		waitEvent(t, a.name, "Warning AttestationRefused", "name_mismatch", `node "tpm-b" claimed`)
	})
	t.Run("a replayed finish", func(t *testing.T) { replayedFinish(t) })
	t.Run("the same begin from a second TPM", func(t *testing.T) { beginFromSecondTPM(t) })
	t.Run("an EK enrolled for two nodes", func(t *testing.T) {
		n := newNode(t, "tpm-twin", vendor)
		n.enrol(n.name)
		n.enrol("tpm-twin-2")
		defer unenrol(t, "tpm-twin-2")
		if got := svc.metric(t, "certagent_attestation_enrollments_ambiguous"); got != 1 {
			t.Errorf("ambiguous enrolments metric %v, want 1", got)
		}
		expectRefusal(t, attestation.ReasonAmbiguousEnrollment, n.name, func() error { _, err := n.attest(svc, 0); return err })
		waitEvent(t, "tpm-twin-2", "Warning AttestationRefused", "ambiguous_enrollment", "tpm-twin, tpm-twin-2")
	})
	t.Run("an enrolment withdrawn", func(t *testing.T) {
		n := newNode(t, "tpm-withdrawn", vendor)
		n.enrol(n.name)
		unenrol(t, n.name)
		expectRefusal(t, attestation.ReasonUnknownEK, n.name, func() error { _, err := n.attest(svc, 0); return err })
	})
}

// expectRefusal runs try and checks it was refused for reason with nothing
// issued, logged for claimed, and counted; it returns the log line.
func expectRefusal(t *testing.T, reason attestation.Reason, claimed string, try func() error) map[string]any {
	t.Helper()
	csrs, counted := allCSRs(t), svc.attempts(t, "refused", string(reason))
	err := try()
	r, ok := tpm.Refusal(err)
	if !ok || r.Reason != reason {
		t.Fatalf("got %v, want a refusal %s", err, reason)
	}
	if n := allCSRs(t); n != csrs {
		t.Errorf("%d CSRs made by a refused attestation", n-csrs)
	}
	if got := svc.attempts(t, "refused", string(reason)); got != counted+1 {
		t.Errorf("refusals %s counted %v → %v", reason, counted, got)
	}
	line := refusalLogged(t, svc, reason, claimed)
	if line["ek_hash"] == nil || line["detail"] == nil {
		t.Errorf("the refusal's log line lacks the EK hash or the detail: %s", describe(line))
	}
	return line
}

// TestAttestationServiceCAPinnedByHash: a node whose user-data carries only
// the hash init-tls printed can verify the service: the CA is in the
// handshake, after the serving certificate, and the serving certificate
// verifies against it for the address the node dials.
func TestAttestationServiceCAPinnedByHash(t *testing.T) {
	pinned := func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, 0, len(rawCerts))
		for _, raw := range rawCerts {
			c, err := x509.ParseCertificate(raw)
			if err != nil {
				return err
			}
			certs = append(certs, c)
		}
		roots := x509.NewCertPool()
		for _, c := range certs[1:] {
			if c.IsCA && attestation.ServiceCAHash(c) == serviceCA.Hash {
				roots.AddCert(c)
			}
		}
		_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"})
		return err
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(svc.URL, "https://"), &tls.Config{
		InsecureSkipVerify:    true, // verified by pinned, against the hash alone
		VerifyPeerCertificate: pinned,
	})
	if err != nil {
		t.Fatalf("a node pinning the CA by its hash %s cannot verify the service: %v", serviceCA.Hash, err)
	}
	_ = conn.Close()
}
