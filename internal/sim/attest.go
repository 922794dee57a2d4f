//go:build failpoints

package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/protocol/attestation"
)

// The attestation service, simulated in-process behind the seam the agent
// uses (bootstrap.Attestation.Attest: one exchange for a CSR, the issued
// chain back). The TPM half is below that seam (bootstrap/tpm) and is
// proven on a software TPM by its own tests and test/attestation; here the
// node's TPM is always the enrolled one or not, as the service decides.
// Like cluster/issuer, the service creates the CSR under a name derived
// from the request (or adopts the one it made for the same request before),
// approves it and returns its certificate.

// attestMode is how a node is configured with attestation.
type attestMode int

const (
	attestNone   attestMode = iota
	attestBefore            // attestation first, a bootstrap kubeconfig the fallback
	attestAfter             // a bootstrap kubeconfig first
	attestOnly              // no bootstrap kubeconfig, ever
)

func (m attestMode) String() string {
	return [...]string{"token", "attestation beforeToken", "attestation afterToken", "attestation only"}[m]
}

// serviceUser is who the service's CSRs are requested by.
const serviceUser = "system:serviceaccount:certagent-system:certagent-attestor"

// attestService is the simulated service; its state is guarded by the
// API's mutex (it talks to that API as the real one does).
type attestService struct {
	w        *World
	mode     attestMode
	caFile   string // the cluster CA the node's configuration names
	enrolled bool
	down     bool          // unreachable
	busy     bool          // answers busy (retryable)
	slow     time.Duration // each exchange takes this long
	lossy    bool          // the answer is lost after the CSR is made (a connection reset)

	byKey map[string][]byte // the CSR last sent with each key
	// An attestation, for counting: from a client certificate stored to
	// the next, the CSRs the service created (by name) and the keys sent.
	names     map[string]bool
	keys      map[string]bool
	explained bool // a key was legitimately discarded meanwhile (a token CSR denied)
	refusal   *refusalSnap
}

// refusalSnap is the node's files when the service refused it, until it
// obtains a certificate: nothing may touch them meanwhile.
type refusalSnap struct {
	at          time.Time
	why         string
	kubeconfig  []byte
	certificate []byte
}

func newAttestService(w *World, mode attestMode) *attestService {
	return &attestService{w: w, mode: mode, enrolled: true, caFile: w.dir + "/etc/ca.crt",
		byKey: map[string][]byte{}, names: map[string]bool{}, keys: map[string]bool{}}
}

// writeCA puts the cluster's CA where the node's configuration names it
// (the user-data, or the operator after a rebuild).
func (s *attestService) writeCA() {
	s.w.api.mu.Lock()
	data := bytes.Clone(s.w.api.servingBundle())
	s.w.api.mu.Unlock()
	if err := os.WriteFile(s.caFile, data, 0o644); err != nil {
		panic(err)
	}
}

// attestation is what the agent's bootstrapper is given.
func (s *attestService) attestation() *bootstrap.Attestation {
	return &bootstrap.Attestation{Attest: s.attest, Service: "https://attest.sim:31443", Server: "https://sim:6443",
		CAFile: s.caFile, AfterToken: s.mode == attestAfter}
}

// attest is one exchange: begin and finish with the TPM, then the issue.
func (s *attestService) attest(ctx context.Context, csrPEM []byte) ([]byte, error) {
	a := s.w.api
	a.arrive()
	a.mu.Lock()
	slow := s.slow
	err := s.admit(csrPEM)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	// The exchange takes half the time, the signing the other half: a
	// node cut off then (a restart) leaves a CSR the service made.
	if err := wait(ctx, slow/2); err != nil {
		return nil, err
	}
	a.mu.Lock()
	err = s.gate() // it may have gone meanwhile
	var chain []byte
	if err == nil {
		chain, err = s.issue(csrPEM)
	}
	// Besides the spells, one answer in six is lost (the node's retry must
	// find the CSR the service made, with the same key).
	lost := err == nil && (s.lossy || s.w.rngFor("answer lost", s.w.stats.Attest.Calls).IntN(6) == 0)
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if lost {
		s.w.stats.Attest.Lost++
		return nil, fmt.Errorf("reading the attestation service's finish answer: %w", &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)})
	}
	if err := wait(ctx, slow-slow/2); err != nil {
		return nil, err
	}
	return chain, nil
}

// wait sleeps for d unless ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// admit checks what the node sent and whether the service answers.
func (s *attestService) admit(csrPEM []byte) error {
	s.w.stats.Attest.Calls++
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return s.refuse(attestation.ReasonBadRequest, "no CSR")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return s.refuse(attestation.ReasonBadCSR, err.Error())
	}
	pub, _ := x509.MarshalPKIXPublicKey(req.PublicKey)
	key := string(pub)
	if prev, ok := s.byKey[key]; ok && !bytes.Equal(prev, csrPEM) {
		s.w.api.fail("seed %d: the node sent the attestation service another CSR for the same pending key (a retry must send the very same request, or the service makes a second CSR)", s.w.seed)
	}
	s.byKey[key] = bytes.Clone(csrPEM)
	s.keys[key] = true
	if want := "system:node:" + s.w.cfg.NodeName; req.Subject.CommonName != want {
		return s.refuse(attestation.ReasonNameMismatch, req.Subject.CommonName)
	}
	return s.gate()
}

// gate is an outage, the enrolment, the service busy, the API server.
func (s *attestService) gate() error {
	switch {
	case s.down:
		s.w.stats.Attest.Unreachable++
		s.snapshot("unreachable")
		return fmt.Errorf("calling the attestation service: %w", &url.Error{Op: "Post", URL: "https://attest.sim:31443/v1/attest/begin",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}})
	case !s.enrolled:
		return s.refuse(attestation.ReasonUnknownEK, "no TPMEnrollment for this EK; enrol it with certagent attest enroll | kubectl apply -f -")
	case s.busy:
		return s.refuse(attestation.ReasonBusy, "too many open sessions for this EK")
	case s.w.api.gate() != nil:
		return s.refuse(attestation.ReasonIssueFailed, "the API server cannot be reached")
	}
	return nil
}

func (s *attestService) refuse(r attestation.Reason, msg string) error {
	s.w.stats.Attest.Refused++
	s.snapshot(string(r))
	return &attestation.Error{Reason: r, Message: msg}
}

// snapshot keeps the node's files as the refusal finds them.
func (s *attestService) snapshot(why string) {
	if s.refusal != nil {
		return
	}
	kc, _ := os.ReadFile(s.w.cfg.Kubeconfig)
	cert, _ := os.ReadFile(bootstrap.CurrentPath(s.w.cfg.CertDir, bootstrap.Client))
	s.refusal = &refusalSnap{at: s.w.now(), why: why, kubeconfig: kc, certificate: cert}
}

// issue creates (or adopts) the CSR named after the request, approves it
// and returns its certificate, as cluster/issuer does; a.mu is held.
func (s *attestService) issue(csrPEM []byte) ([]byte, error) {
	a := s.w.api
	var exp *int32
	if d := s.w.cfg.Rotation.RequestedDuration.Duration; d > 0 {
		e := int32(d / time.Second)
		exp = &e
	}
	h := sha256.New()
	h.Write(csrPEM)
	if exp != nil {
		h.Write([]byte("\x00expirationSeconds=" + strconv.Itoa(int(*exp))))
	}
	name := "certagent-tpm-" + hex.EncodeToString(h.Sum(nil))[:40]
	o, ok := a.objects[name]
	if ok {
		s.w.stats.Attest.Adopted++
	} else {
		in := &certificatesv1.CertificateSigningRequest{}
		in.Name = name
		in.Spec = certificatesv1.CertificateSigningRequestSpec{Request: csrPEM, SignerName: certificatesv1.KubeAPIServerClientKubeletSignerName,
			ExpirationSeconds: exp, Usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}}
		o = a.insert(in, serviceUser)
		s.w.stats.Attest.Created++
		s.names[name] = true
		if n := len(s.names); n > 1 && !s.explained {
			a.fail("seed %d: %d CSRs created for one attestation of the node (%d keys sent): a retry must send the same request", s.w.seed, n, len(s.keys))
		}
		s.w.stats.Attest.MostPerAttestation = max(s.w.stats.Attest.MostPerAttestation, len(s.names))
	}
	a.decide(o, true, "AttestedByTPM")
	if len(o.obj.Status.Certificate) == 0 {
		return nil, s.refuse(attestation.ReasonIssueFailed, "CSR "+name+" was denied")
	}
	s.refusal = nil
	return bytes.Clone(o.obj.Status.Certificate), nil
}

// newAttestation: a client certificate was stored; the next attestation
// counts its CSRs afresh.
func (s *attestService) newAttestation() {
	if len(s.names) > 0 {
		s.w.stats.Attest.Attestations++
	}
	clear(s.names)
	clear(s.keys)
	s.explained = false
}
