package attestation

import (
	"encoding/pem"
	"strings"
)

// Size limits of the fields; each is well above what a TPM or a kubelet CSR produces.
const (
	maxNodeName     = 253
	maxEKPublic     = 1 << 10 // RSA 2048 PKIX is 294 bytes
	maxEKCert       = 4 << 10 // NV certificates are 1–2 KiB
	maxAKPublic     = 1 << 10 // TPM2B_PUBLIC of an ECC P-256 key is ~90 bytes
	maxCSR          = 8 << 10
	maxSessionID    = 64
	minSessionID    = 22 // 128 bits, base64url
	maxSecret       = 64 // a TPM2B_DIGEST holds at most one SHA-512
	maxNonce        = 64
	maxCredential   = 1 << 10
	maxEncSecret    = 1 << 10
	maxAttest       = 2 << 10
	maxSignature    = 1 << 10
	maxChain        = 32 << 10
	csrPEMBlockType = "CERTIFICATE REQUEST"
)

// Validate checks a BeginRequest's syntax; a nil result means the verifier
// may look at it, not that it is accepted.
func (m *BeginRequest) Validate() *Error {
	if err := ValidateNodeName(m.NodeName); err != nil {
		return err
	}
	if err := sized("ekPublic", m.EKPublic, 1, maxEKPublic); err != nil {
		return err
	}
	if len(m.EKCertificate) > 0 {
		if err := sized("ekCertificate", m.EKCertificate, 1, maxEKCert); err != nil {
			return err
		}
	}
	if err := sized("akPublic", m.AKPublic, 1, maxAKPublic); err != nil {
		return err
	}
	if len(m.CSR) == 0 || len(m.CSR) > maxCSR {
		return Refuse(ReasonBadRequest, "csr must be 1 to %d bytes of PEM, is %d", maxCSR, len(m.CSR))
	}
	if _, err := CSRDER(m.CSR); err != nil {
		return err
	}
	if m.ExpirationSeconds != 0 && m.ExpirationSeconds < MinExpirationSeconds {
		return Refuse(ReasonBadRequest, "expirationSeconds must be 0 (the signer's default) or at least %d, is %d", MinExpirationSeconds, m.ExpirationSeconds)
	}
	return nil
}

// Validate checks a BeginResponse as the node receives it: a nonce shorter
// than MinNonceBytes is refused. Expires is not compared with the node's
// clock (which may be skewed); the service enforces it.
func (m *BeginResponse) Validate() *Error {
	if err := validSessionID(m.SessionID); err != nil {
		return err
	}
	if err := sized("credential", m.Credential, 1, maxCredential); err != nil {
		return err
	}
	if err := sized("encryptedSecret", m.EncryptedSecret, 1, maxEncSecret); err != nil {
		return err
	}
	if err := sized("nonce", m.Nonce, MinNonceBytes, maxNonce); err != nil {
		return err
	}
	if m.Expires.IsZero() {
		return Refuse(ReasonBadRequest, "expires is missing")
	}
	return nil
}

// Validate checks a FinishRequest's syntax.
func (m *FinishRequest) Validate() *Error {
	if err := validSessionID(m.SessionID); err != nil {
		return err
	}
	if err := sized("secret", m.Secret, 1, maxSecret); err != nil {
		return err
	}
	if err := sized("attest", m.Attest, 1, maxAttest); err != nil {
		return err
	}
	return sized("signature", m.Signature, 1, maxSignature)
}

// Validate checks a FinishResponse's syntax: PEM with at least one certificate.
func (m *FinishResponse) Validate() *Error {
	if len(m.CertificateChain) == 0 || len(m.CertificateChain) > maxChain {
		return Refuse(ReasonBadRequest, "certificateChain must be 1 to %d bytes, is %d", maxChain, len(m.CertificateChain))
	}
	if b, _ := pem.Decode([]byte(m.CertificateChain)); b == nil || b.Type != "CERTIFICATE" {
		return Refuse(ReasonBadRequest, "certificateChain does not start with a PEM CERTIFICATE")
	}
	return nil
}

// CSRDER returns the DER of a PEM CSR: exactly one CERTIFICATE REQUEST block
// and nothing else but white space, so both sides hash the same bytes.
func CSRDER(csrPEM string) ([]byte, *Error) {
	b, rest := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != csrPEMBlockType {
		return nil, Refuse(ReasonBadRequest, "csr is not a PEM %s", csrPEMBlockType)
	}
	if len(b.Headers) != 0 || strings.TrimSpace(string(rest)) != "" {
		return nil, Refuse(ReasonBadRequest, "csr must be one PEM %s with nothing else", csrPEMBlockType)
	}
	return b.Bytes, nil
}

func sized(field string, b []byte, lo, hi int) *Error {
	if len(b) < lo || len(b) > hi {
		return Refuse(ReasonBadRequest, "%s must be %d to %d bytes, is %d", field, lo, hi, len(b))
	}
	return nil
}

// validSessionID: base64url without padding, 22 to 64 characters.
func validSessionID(id string) *Error {
	if len(id) < minSessionID || len(id) > maxSessionID {
		return Refuse(ReasonBadRequest, "sessionID must be %d to %d characters", minSessionID, maxSessionID)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Refuse(ReasonBadRequest, "sessionID has a character outside base64url")
		}
	}
	return nil
}

// ValidateNodeName checks name is a DNS-1123 subdomain, as Kubernetes requires of node names
// (lower-case alphanumerics, '-' and '.', each label starting and ending
// alphanumeric, at most 253 characters).
func ValidateNodeName(name string) *Error {
	if name == "" || len(name) > maxNodeName {
		return Refuse(ReasonBadRequest, "nodeName must be 1 to %d characters", maxNodeName)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return Refuse(ReasonBadRequest, "nodeName %q is not a DNS-1123 subdomain", name)
		}
		for i, c := range label {
			alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
			if !alnum && (c != '-' || i == 0 || i == len(label)-1) {
				return Refuse(ReasonBadRequest, "nodeName %q is not a DNS-1123 subdomain", name)
			}
		}
	}
	return nil
}
