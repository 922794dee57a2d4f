package tpm

import (
	"crypto/x509"
	"fmt"

	"github.com/certagent/certagent/protocol/attestation"
)

// EnrollmentInfo is what an operator registers for a node: the EK's hash
// (what the service looks the node's name up by) and, for the operator's
// eyes and the manufacturer-CA policy, who issued the EK certificate.
type EnrollmentInfo struct {
	// EKHash is attestation.EKHash of the EK public key: "sha256:<hex>".
	EKHash string `json:"ekHash"`
	// EKCertificateIssuer is the EK certificate's issuer (RFC 2253), empty
	// if the TPM has no EK certificate.
	EKCertificateIssuer string `json:"ekCertificateIssuer,omitempty"`
}

// Enrollment reads the EK of the TPM at path (DefaultPath if empty) and
// returns what to enrol. It changes nothing in the TPM.
func Enrollment(path string) (EnrollmentInfo, error) {
	t, err := open(path)
	if err != nil {
		return EnrollmentInfo{}, err
	}
	defer func() { _ = t.Close() }()
	e, err := loadEK(t)
	if err != nil {
		return EnrollmentInfo{}, err
	}
	defer e.flush(t)
	info := EnrollmentInfo{EKHash: attestation.EKHash(e.pkix)}
	if e.cert != nil {
		c, err := x509.ParseCertificate(e.cert)
		if err != nil {
			return EnrollmentInfo{}, fmt.Errorf("parsing the EK certificate: %w", err)
		}
		info.EKCertificateIssuer = c.Issuer.String()
	}
	return info, nil
}
