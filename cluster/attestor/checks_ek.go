package attestor

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"slices"
	"time"

	"github.com/certagent/certagent/protocol/attestation"
)

// parseEKPublic reads the EK public key the node sent: PKIX DER of an RSA
// 2048 key with exponent 65537, the TCG default EK template (the only EK the
// service can address a credential to: it rebuilds the EK's public area from
// that template). It also returns the key's canonical PKIX DER, which the
// EK hash is of (whatever DER encoding the node sent).
func parseEKPublic(der []byte) (*rsa.PublicKey, []byte, *attestation.Error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, nil, attestation.Refuse(attestation.ReasonBadRequest, "ekPublic is not a PKIX public key: %v", err)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, nil, attestation.Refuse(attestation.ReasonBadRequest, "ekPublic is a %T; only the RSA 2048 EK is supported", pub)
	}
	if rsaPub.N.BitLen() != 2048 || rsaPub.E != 65537 {
		return nil, nil, attestation.Refuse(attestation.ReasonBadRequest, "ekPublic is RSA %d bits, exponent %d; only the default RSA 2048 EK (exponent 65537) is supported", rsaPub.N.BitLen(), rsaPub.E)
	}
	canonical, err := x509.MarshalPKIXPublicKey(rsaPub)
	if err != nil {
		return nil, nil, attestation.Refuse(attestation.ReasonBadRequest, "ekPublic does not re-encode: %v", err)
	}
	return rsaPub, canonical, nil
}

// parseEKCert parses the EK certificate, if one was sent.
func parseEKCert(der []byte) (*x509.Certificate, *attestation.Error) {
	if len(der) == 0 {
		return nil, nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadRequest, "ekCertificate does not parse: %v", err)
	}
	return cert, nil
}

// checkEKCertMatches: the certificate certifies the EK that was sent, so
// what the manufacturer vouches for is the key the credential is made for.
func checkEKCertMatches(cert *x509.Certificate, ek *rsa.PublicKey) *attestation.Error {
	if cert == nil {
		return nil
	}
	if !ek.Equal(cert.PublicKey) {
		return attestation.Refuse(attestation.ReasonEKCertMismatch, "the EK certificate (serial %s, issuer %q) is for another key than ekPublic", cert.SerialNumber, cert.Issuer)
	}
	return nil
}

// ManufacturerCAs is the policy that EK certificates must chain to a TPM
// manufacturer's CA.
type ManufacturerCAs struct {
	// Roots are the manufacturers' root CAs. Required.
	Roots *x509.CertPool
	// Intermediates are their EK issuing CAs, which TPMs do not carry.
	Intermediates *x509.CertPool
}

// oidSubjectAltName is the SAN extension, which in an EK certificate is a
// critical directoryName (TPM manufacturer, model, version) that Go leaves
// unhandled (TCG EK Credential Profile 3.2.9).
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// checkEKCertChain: when the manufacturer-CA policy is on, the TPM has an EK
// certificate and it chains to a trusted manufacturer root, valid at now.
func checkEKCertChain(cert *x509.Certificate, cas *ManufacturerCAs, now time.Time) *attestation.Error {
	if cas == nil {
		return nil
	}
	if cert == nil {
		return attestation.Refuse(attestation.ReasonUntrustedEKCA, "the manufacturer-CA policy requires an EK certificate and none was sent")
	}
	c := *cert
	c.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(c.UnhandledCriticalExtensions),
		func(oid asn1.ObjectIdentifier) bool { return oid.Equal(oidSubjectAltName) })
	if _, err := c.Verify(x509.VerifyOptions{
		Roots:         cas.Roots,
		Intermediates: cas.Intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, // EK certificates carry tcg-kp-EKCertificate
	}); err != nil {
		return attestation.Refuse(attestation.ReasonUntrustedEKCA, "the EK certificate (issuer %q) does not chain to a trusted TPM manufacturer CA: %v; add its CA to the service's manufacturer CAs if this TPM's maker is trusted", cert.Issuer, err)
	}
	return nil
}

// lookupEnrolledName: the EK is enrolled, and for which node. A refusal
// from the Enrollments (such as an ambiguous enrolment) is passed on as it
// is; any other failure is internal and retryable.
func lookupEnrolledName(ctx context.Context, enrolled Enrollments, ekHash string) (string, *attestation.Error, error) {
	name, ok, err := enrolled.NodeName(ctx, ekHash)
	var refusal *attestation.Error
	if errors.As(err, &refusal) {
		return "", refusal, nil
	}
	if err != nil {
		return "", attestation.Refuse(attestation.ReasonInternal, "looking up the enrolment failed; try again"), err
	}
	if !ok {
		return "", attestation.Refuse(attestation.ReasonUnknownEK, "no node is enrolled for EK %s; enrol it (certagent attest enroll on the node prints the record)", ekHash), nil
	}
	return name, nil, nil
}

// checkNameMatches: the node asks for the name enrolled for its EK, and no other.
func checkNameMatches(enrolled, asked string) *attestation.Error {
	if enrolled != asked {
		return attestation.Refuse(attestation.ReasonNameMismatch, "this TPM is enrolled as node %q, not %q", enrolled, asked)
	}
	return nil
}
