package attestation

import "time"

// The two endpoints.
const (
	BeginPath  = "/v1/attest/begin"
	FinishPath = "/v1/attest/finish"
)

// MaxBodyBytes bounds a request or response body; every valid message is far
// smaller (the largest, a BeginRequest, is an EK certificate plus a CSR).
const MaxBodyBytes = 64 << 10

// MinNonceBytes is the least nonce a node accepts and a service sends.
const MinNonceBytes = 32

// BeginRequest is the node's first call: who it says it is, the TPM keys that
// prove it, and the CSR it wants issued. Nothing in it is secret.
type BeginRequest struct {
	// NodeName is the Kubernetes node name the node asks for; the service
	// compares it with the name enrolled for the EK.
	NodeName string `json:"nodeName"`
	// EKPublic is the endorsement key's public key, PKIX DER. Its SHA-256 is
	// what the operator enrols (EKHash).
	EKPublic []byte `json:"ekPublic"`
	// EKCertificate is the EK certificate (DER) from the TPM's NV, if it has one.
	EKCertificate []byte `json:"ekCertificate,omitempty"`
	// AKPublic is the attestation key's public area, a marshalled TPM2B_PUBLIC.
	AKPublic []byte `json:"akPublic"`
	// CSR is the kubelet client certificate request, PEM, signed on the node
	// by a key that never leaves it.
	CSR string `json:"csr"`
	// ExpirationSeconds, if not zero, is the certificate lifetime the node
	// asks for (a Kubernetes CSR's spec.expirationSeconds: at least
	// MinExpirationSeconds). The service may shorten it to its policy, and
	// the signer to its own maximum.
	ExpirationSeconds int32 `json:"expirationSeconds,omitempty"`
}

// MinExpirationSeconds is the shortest certificate lifetime a node may ask
// for: Kubernetes refuses a CSR's expirationSeconds below 600.
const MinExpirationSeconds = 600

// BeginResponse is the service's challenge: a credential only the TPM holding
// the EK can activate, and only for the AK named in it, plus a fresh nonce.
type BeginResponse struct {
	// SessionID names the exchange in FinishRequest.
	SessionID string `json:"sessionID"`
	// Credential and EncryptedSecret are TPM2_MakeCredential's output for the
	// AK's name under the EK: the idObject (TPM2B_ID_OBJECT contents) and the
	// encrypted seed (TPM2B_ENCRYPTED_SECRET contents).
	Credential      []byte `json:"credential"`
	EncryptedSecret []byte `json:"encryptedSecret"`
	// Nonce is fresh random, at least MinNonceBytes long; the quote's
	// qualifying data is QualifyingData(Nonce, CSR DER).
	Nonce []byte `json:"nonce"`
	// Expires is when the service stops accepting FinishRequest for this session.
	Expires time.Time `json:"expires"`
}

// FinishRequest is the node's answer to the challenge.
type FinishRequest struct {
	SessionID string `json:"sessionID"`
	// Secret is what TPM2_ActivateCredential returned.
	Secret []byte `json:"secret"`
	// Attest is the TPMS_ATTEST the AK signed (TPM2_Quote's quoted, the
	// TPM2B_ATTEST contents); Signature is its TPMT_SIGNATURE, marshalled.
	Attest    []byte `json:"attest"`
	Signature []byte `json:"signature"`
}

// FinishResponse carries the issued certificate.
type FinishResponse struct {
	// CertificateChain is PEM, the node's certificate first.
	CertificateChain string `json:"certificateChain"`
}
