package attestor_test

// End to end at this level: certagent's node half (bootstrap/tpm) against the
// cluster half (this package's Handler) over loopback HTTPS, each node with
// its own real software TPM (swtpm). Only the test links the two halves.

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
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/bootstrap/tpm"
	"github.com/certagent/certagent/cluster/attestor"
	"github.com/certagent/certagent/internal/swtpm"
	"github.com/certagent/certagent/protocol/attestation"
)

const sessionTTL = time.Minute

// env is one attestation service with everything around it recorded.
type env struct {
	t        *testing.T
	clock    *clocktesting.FakeClock
	enrolled attestor.StaticEnrollments
	issuer   *fakeIssuer
	outcomes *recorder
	logs     *observer.ObservedLogs
	srv      *httptest.Server

	mu     sync.Mutex
	bodies map[string][][]byte // request bodies by path
	onPath map[string]func()   // run before a request to that path is served
}

func newEnv(t *testing.T, cas *attestor.ManufacturerCAs) *env {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	e := &env{
		t: t,
		// Ahead of the real clock: the EK certificates of TPMs manufactured
		// during the test must already be valid.
		clock:    clocktesting.NewFakeClock(time.Now().Add(10 * time.Minute)),
		enrolled: attestor.StaticEnrollments{},
		issuer:   newFakeIssuer(t),
		outcomes: &recorder{},
		logs:     logs,
		bodies:   map[string][][]byte{},
		onPath:   map[string]func(){},
	}
	a, err := attestor.New(attestor.Config{
		Enrollments:     e.enrolled,
		Issuer:          e.issuer,
		ManufacturerCAs: cas,
		SessionTTL:      sessionTTL,
		Clock:           e.clock,
		Observer:        e.outcomes,
		Logger:          zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := a.Handler()
	e.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		e.bodies[r.URL.Path] = append(e.bodies[r.URL.Path], body)
		hook := e.onPath[r.URL.Path]
		e.mu.Unlock()
		if hook != nil {
			hook()
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// enrol registers d's TPM as node name, as an operator would from
// `Enrollment`'s output.
func (e *env) enrol(d *swtpm.TPM, name string) {
	e.t.Helper()
	info, err := tpm.Enrollment(d.Path())
	if err != nil {
		e.t.Fatal(err)
	}
	e.enrolled[info.EKHash] = name
}

// node is certagent's node half for the TPM d, asking for name.
func (e *env) node(d *swtpm.TPM, name string) *tpm.Attestor {
	e.t.Helper()
	cas := x509.NewCertPool()
	cas.AddCert(e.srv.Certificate())
	a, err := tpm.New(tpm.Config{TPMPath: d.Path(), ServiceURL: e.srv.URL, ServiceCAs: cas, NodeName: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// post sends body to path as a node would, returning the status and the
// refusal (nil on 200).
func (e *env) post(path string, body []byte) (int, *attestation.Error, []byte) {
	e.t.Helper()
	rsp, err := e.srv.Client().Post(e.srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	defer rsp.Body.Close()
	data, _ := io.ReadAll(rsp.Body)
	if rsp.StatusCode == http.StatusOK {
		return rsp.StatusCode, nil, data
	}
	var refusal attestation.Error
	if err := json.Unmarshal(data, &refusal); err != nil {
		e.t.Fatalf("refusal %s is not an attestation.Error: %v", data, err)
	}
	return rsp.StatusCode, &refusal, data
}

// wantRefused checks err is the service's refusal for reason, that the
// refusal was logged with that reason and counted, and nothing was issued.
func (e *env) wantRefused(err error, reason attestation.Reason) {
	e.t.Helper()
	r, ok := tpm.Refusal(err)
	if !ok {
		e.t.Fatalf("got %v, want a refusal %s", err, reason)
	}
	if r.Reason != reason {
		e.t.Fatalf("refused with %s (%s), want %s", r.Reason, r.Message, reason)
	}
	e.wantRefusalRecorded(reason)
}

func (e *env) wantRefusalRecorded(reason attestation.Reason) {
	e.t.Helper()
	logged := e.logs.FilterMessage("attestation refused").FilterField(zap.String("reason", string(reason))).Len()
	if logged == 0 {
		e.t.Errorf("no log line for the refusal %s; logs: %v", reason, e.logs.All())
	}
	if !e.outcomes.has(reason) {
		e.t.Errorf("the observer was not told of the refusal %s: %v", reason, e.outcomes.all())
	}
	if n := e.issuer.count(); n != 0 {
		e.t.Errorf("%d certificates issued despite the refusal", n)
	}
}

// csrFor makes a kubelet client CSR (key on the node, as certagent does).
func csrFor(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func manufacturerCAs(ca *swtpm.CA) *attestor.ManufacturerCAs {
	return &attestor.ManufacturerCAs{Roots: ca.Roots(), Intermediates: ca.Intermediates()}
}

func TestAttestIssuesTheEnrolledNodesCertificate(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, manufacturerCAs(ca))
	d := swtpm.StartTest(t, ca)
	e.enrol(d, "node-a")

	chain, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a"))
	if err != nil {
		t.Fatalf("attesting an enrolled node: %v", err)
	}
	b, _ := pem.Decode(chain)
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "system:node:node-a" {
		t.Errorf("issued CN %q", leaf.Subject.CommonName)
	}
	if got := e.issuer.names(); len(got) != 1 || got[0] != "node-a" {
		t.Errorf("issued for %v, want [node-a]", got)
	}
	if !e.outcomes.has("") || e.logs.FilterMessage("attestation passed; certificate issued").Len() != 1 {
		t.Errorf("the success was not observed and logged: %v", e.outcomes.all())
	}

	if o := e.outcomes.all(); o[0].ClaimedNode != "node-a" || o[len(o)-1].ClaimedNode != "node-a" {
		t.Errorf("outcomes without the claimed name: %+v", o)
	}

	// After a reboot (TPM power cycle: transient objects gone, nothing
	// persisted by certagent) the node attests again with the same enrolment.
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a")); err != nil {
		t.Fatalf("attesting after a TPM restart: %v", err)
	}
}

func TestAttestRefusesAnUnenrolledEK(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, manufacturerCAs(ca))
	enrolled, stranger := swtpm.StartTest(t, ca), swtpm.StartTest(t, ca)
	e.enrol(enrolled, "node-a")

	_, err := e.node(stranger, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a"))
	e.wantRefused(err, attestation.ReasonUnknownEK)
}

func TestAttestRefusesAnEKCertificateFromAnUntrustedCA(t *testing.T) {
	trusted, rogue := swtpm.NewTestCA(t, "vendor"), swtpm.NewTestCA(t, "rogue")
	e := newEnv(t, manufacturerCAs(trusted))
	d := swtpm.StartTest(t, rogue)
	e.enrol(d, "node-a") // enrolled, but its certificate's maker is not trusted

	_, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a"))
	e.wantRefused(err, attestation.ReasonUntrustedEKCA)
}

func TestAttestRefusesAReplayedFinish(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	d := swtpm.StartTest(t, ca)
	e.enrol(d, "node-a")
	if _, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a")); err != nil {
		t.Fatal(err)
	}

	// The attacker captured the finish (TLS hides it; assume it leaked) and
	// sends it again.
	captured := e.bodies[attestation.FinishPath][0]
	status, refusal, _ := e.post(attestation.FinishPath, captured)
	if refusal == nil || refusal.Reason != attestation.ReasonReplayed || status != http.StatusConflict {
		t.Fatalf("replayed finish: %d %+v, want 409 %s", status, refusal, attestation.ReasonReplayed)
	}
	if e.issuer.count() != 1 {
		t.Errorf("%d certificates issued, want the one of the real exchange", e.issuer.count())
	}
	if e.logs.FilterField(zap.String("reason", string(attestation.ReasonReplayed))).Len() == 0 || !e.outcomes.has(attestation.ReasonReplayed) {
		t.Error("the replay was not logged and observed with its reason")
	}
}

func TestAttestRefusesAnotherNodesName(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	a, b := swtpm.StartTest(t, ca), swtpm.StartTest(t, ca)
	e.enrol(a, "node-a")
	e.enrol(b, "node-b")

	t.Run("asks for the other name", func(t *testing.T) {
		_, err := e.node(a, "node-b").Attest(context.Background(), csrFor(t, "system:node:node-b"))
		e.wantRefused(err, attestation.ReasonNameMismatch)
	})
	t.Run("its own name, the other's CN in the CSR", func(t *testing.T) {
		_, err := e.node(a, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-b"))
		e.wantRefused(err, attestation.ReasonNameMismatch)
	})
}

// TestAttestRefusesTheSameBeginFromASecondTPM: the user-data and everything
// node A sent are public; an attacker with another TPM (B) replays A's begin,
// or sends A's EK with B's own AK. The credential is encrypted to A's EK:
// B's TPM cannot activate it, and any secret it sends is wrong.
func TestAttestRefusesTheSameBeginFromASecondTPM(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, manufacturerCAs(ca))
	a, b := swtpm.StartTest(t, ca), swtpm.StartTest(t, ca)
	e.enrol(a, "node-a")

	devA, err := tpm.OpenDevice(a.Path())
	if err != nil {
		t.Fatal(err)
	}
	beginA := attestation.BeginRequest{
		NodeName:      "node-a",
		EKPublic:      devA.EKPublic(),
		EKCertificate: devA.EKCertificate(),
		AKPublic:      devA.AKPublic(),
		CSR:           string(csrFor(t, "system:node:node-a")),
	}
	_ = devA.Close()
	devB, err := tpm.OpenDevice(b.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer devB.Close()
	withBsAK := beginA
	withBsAK.AKPublic = devB.AKPublic()

	for _, tc := range []struct {
		name  string
		begin attestation.BeginRequest
	}{
		{"A's begin replayed verbatim", beginA},
		{"A's EK with B's AK", withBsAK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(tc.begin)
			_, refusal, data := e.post(attestation.BeginPath, body)
			if refusal != nil {
				t.Fatalf("begin refused: %+v", refusal)
			}
			var ch attestation.BeginResponse
			if err := json.Unmarshal(data, &ch); err != nil {
				t.Fatal(err)
			}
			secret, err := devB.ActivateCredential(ch.Credential, ch.EncryptedSecret)
			if err == nil {
				t.Fatal("TPM B activated a credential made for TPM A's EK")
			}
			secret = make([]byte, 32) // B's best guess
			qd := attestation.QualifyingData(ch.Nonce, mustCSRDER(t, tc.begin.CSR))
			attest, sig, err := devB.Quote(qd)
			if err != nil {
				t.Fatal(err)
			}
			fin, _ := json.Marshal(attestation.FinishRequest{SessionID: ch.SessionID, Secret: secret, Attest: attest, Signature: sig})
			_, refusal, _ = e.post(attestation.FinishPath, fin)
			if refusal == nil || refusal.Reason != attestation.ReasonBadSecret {
				t.Fatalf("finish from TPM B: %+v, want %s", refusal, attestation.ReasonBadSecret)
			}
			e.wantRefusalRecorded(attestation.ReasonBadSecret)
		})
	}
}

func TestAttestRefusesAStaleNonce(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	d := swtpm.StartTest(t, ca)
	e.enrol(d, "node-a")
	// The node is slower than the session lives: the clock passes the
	// session's expiry between begin and finish.
	e.onPath[attestation.FinishPath] = func() { e.clock.Step(sessionTTL + time.Second) }

	_, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a"))
	e.wantRefused(err, attestation.ReasonStaleNonce)
	if r, _ := tpm.Refusal(err); !r.Reason.Retryable() {
		t.Error("a stale nonce should tell the node to begin again")
	}
}

func mustCSRDER(t *testing.T, csrPEM string) []byte {
	t.Helper()
	der, rerr := attestation.CSRDER(csrPEM)
	if rerr != nil {
		t.Fatal(rerr)
	}
	return der
}

// fakeIssuer signs attested CSRs with a CA of its own, as the Kubernetes
// signer would, and records what it issued.
type fakeIssuer struct {
	key      *ecdsa.PrivateKey
	cert     *x509.Certificate
	mu       sync.Mutex
	issued   []string
	requests []attestor.IssueRequest
	fail     error
}

func newFakeIssuer(t *testing.T) *fakeIssuer {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &fakeIssuer{key: key, cert: cert}
}

func (f *fakeIssuer) Issue(_ context.Context, req attestor.IssueRequest) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(int64(len(f.issued) + 2)),
		Subject:      req.CSR.Subject,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, f.cert, req.CSR.PublicKey, f.key)
	if err != nil {
		return nil, err
	}
	f.issued = append(f.issued, req.NodeName)
	f.requests = append(f.requests, req)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func (f *fakeIssuer) count() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.issued) }
func (f *fakeIssuer) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.issued...)
}

// recorder is an Observer keeping every outcome.
type recorder struct {
	mu  sync.Mutex
	got []attestor.Outcome
}

func (r *recorder) Observe(o attestor.Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, o)
}
func (r *recorder) all() []attestor.Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]attestor.Outcome(nil), r.got...)
}

// has reports an outcome with reason ("" for a success at finish).
func (r *recorder) has(reason attestation.Reason) bool {
	for _, o := range r.all() {
		if o.Reason == reason && (reason != "" || o.Step == attestor.StepFinish) {
			return true
		}
	}
	return false
}

func TestAttestReportsAFailedIssueAsRetryable(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	d := swtpm.StartTest(t, ca)
	e.enrol(d, "node-a")
	e.issuer.fail = errors.New("apiserver: connection refused")

	_, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a"))
	r, ok := tpm.Refusal(err)
	if !ok || r.Reason != attestation.ReasonIssueFailed || !r.Reason.Retryable() {
		t.Fatalf("got %v, want a retryable %s", err, attestation.ReasonIssueFailed)
	}
	if strings.Contains(r.Message, "connection refused") {
		t.Errorf("the node is told the service's internals: %q", r.Message)
	}
	if e.logs.FilterField(zap.Error(e.issuer.fail)).Len() != 1 {
		t.Errorf("the cause is not in the service's log: %v", e.logs.All())
	}
}

func TestAttestRefusesAnEnrolmentWithdrawnMidExchange(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	d := swtpm.StartTest(t, ca)
	e.enrol(d, "node-a")
	// The operator deletes the enrolment between the node's begin and finish.
	e.onPath[attestation.FinishPath] = func() { clear(e.enrolled) }

	_, err := e.node(d, "node-a").Attest(context.Background(), csrFor(t, "system:node:node-a"))
	e.wantRefused(err, attestation.ReasonUnknownEK)
}

func TestAttestPassesTheAskedLifetimeToTheIssuer(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	d := swtpm.StartTest(t, ca)
	e.enrol(d, "node-a")
	cas := x509.NewCertPool()
	cas.AddCert(e.srv.Certificate())
	n, err := tpm.New(tpm.Config{TPMPath: d.Path(), ServiceURL: e.srv.URL, ServiceCAs: cas, NodeName: "node-a", ExpirationSeconds: 3600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attest(context.Background(), csrFor(t, "system:node:node-a")); err != nil {
		t.Fatal(err)
	}
	e.issuer.mu.Lock()
	defer e.issuer.mu.Unlock()
	if got := e.issuer.requests[0].ExpirationSeconds; got != 3600 {
		t.Errorf("the issuer was asked for %d s, want the node's 3600", got)
	}
}

func TestAttestOutcomeNamesTheClaimAndTheEnrolment(t *testing.T) {
	ca := swtpm.NewTestCA(t, "vendor")
	e := newEnv(t, nil)
	a := swtpm.StartTest(t, ca)
	e.enrol(a, "node-a")
	_, err := e.node(a, "node-b").Attest(context.Background(), csrFor(t, "system:node:node-b"))
	e.wantRefused(err, attestation.ReasonNameMismatch)
	o := e.outcomes.all()[0]
	if o.Node != "node-a" || o.ClaimedNode != "node-b" || o.Detail == "" || o.EKHash == "" {
		t.Errorf("outcome %+v, want node-a enrolled, node-b claimed, a detail and the EK hash", o)
	}
	if e.logs.FilterField(zap.String("claimed_node", "node-b")).FilterField(zap.String("node", "node-a")).Len() != 1 {
		t.Errorf("the refusal's log line does not name both the claimed and the enrolled node: %v", e.logs.All())
	}
}
