package attestor

import (
	"context"
	"crypto/x509"

	"github.com/certagent/certagent/protocol/attestation"
)

// Enrollments answers which node, if any, an EK is enrolled for.
type Enrollments interface {
	// NodeName returns the node name enrolled for ekHash (attestation.EKHash
	// of the EK's PKIX DER); ok is false when there is none. An error that
	// is an *attestation.Error refuses the attestation with its reason (the
	// enrolment itself is unusable, e.g. ambiguous); any other error means
	// the lookup failed (the node may try again).
	NodeName(ctx context.Context, ekHash string) (name string, ok bool, err error)
}

// StaticEnrollments maps EK hashes to node names: for tests and a fixed fleet.
type StaticEnrollments map[string]string

// NodeName implements Enrollments.
func (s StaticEnrollments) NodeName(_ context.Context, ekHash string) (string, bool, error) {
	name, ok := s[ekHash]
	return name, ok, nil
}

// IssueRequest is a CSR that passed every check, for the node it is bound to.
type IssueRequest struct {
	// NodeName is the enrolled name; the CSR's CN is system:node:<NodeName>.
	NodeName string
	// EKHash identifies the TPM that proved it.
	EKHash string
	// CSRPEM is the CSR as the node sent it; CSR is it parsed.
	CSRPEM []byte
	CSR    *x509.CertificateRequest
	// ExpirationSeconds is the lifetime the node asked for, 0 for the
	// signer's default (the Issuer applies its own policy to it).
	ExpirationSeconds int32
}

// Issuer turns an attested CSR into a certificate (in Kubernetes: post the
// CSR for kubernetes.io/kube-apiserver-client-kubelet, approve it, wait).
type Issuer interface {
	// Issue returns the certificate chain, PEM, the node's certificate first.
	Issue(ctx context.Context, req IssueRequest) (chainPEM []byte, err error)
}

// Step is the call an Outcome is about.
type Step string

// The two steps.
const (
	StepBegin  Step = "begin"
	StepFinish Step = "finish"
)

// Outcome is one answered call, for metrics and events.
type Outcome struct {
	Step Step
	// Reason is empty when the call succeeded.
	Reason attestation.Reason
	// Node is the enrolled node name once known, else the name asked for.
	Node string
	// ClaimedNode is the name the node asked for (at finish: the name its
	// begin asked for).
	ClaimedNode string
	// EKHash is empty when the request was too malformed to have one.
	EKHash string
	// Detail is the refusal's message as the node was told it (no secret).
	Detail string
	// Cause is an internal failure's error, which the node is not told: for
	// the operator's eyes (logs, Events) only.
	Cause error
}

// Observer is told every outcome (count attempts and refusals by reason).
// It is called synchronously: it must be quick and must not block.
type Observer interface {
	Observe(Outcome)
}

type nopObserver struct{}

func (nopObserver) Observe(Outcome) {}
