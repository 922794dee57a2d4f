package attestor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"slices"

	"github.com/certagent/certagent/protocol/attestation"
)

// The kubelet client certificate's subject (kubernetes.io/kube-apiserver-client-kubelet).
const (
	nodeUserPrefix = "system:node:"
	nodesGroup     = "system:nodes"
)

var (
	oidKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidClientAuth  = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

// checkCSR: the CSR is a kubelet client request for the enrolled node and
// nothing more: signed by its own key (proof the node holds it), subject
// exactly CN=system:node:<node>, O=system:nodes, no names, and no requested
// extension beyond client-kubelet usages. A name other than the enrolled
// one is a name_mismatch; every other defect a bad_csr.
func checkCSR(der []byte, node string) (*x509.CertificateRequest, *attestation.Error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadCSR, "the CSR does not parse: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadCSR, "the CSR's signature is invalid: %v", err)
	}
	if want := nodeUserPrefix + node; csr.Subject.CommonName != want {
		return nil, attestation.Refuse(attestation.ReasonNameMismatch, "the CSR asks for CN %q; this TPM is enrolled as %q", csr.Subject.CommonName, want)
	}
	s := csr.Subject
	if !slices.Equal(s.Organization, []string{nodesGroup}) {
		return nil, attestation.Refuse(attestation.ReasonBadCSR, "the CSR's organization must be exactly [%s], is %q", nodesGroup, s.Organization)
	}
	if len(s.Country)+len(s.Province)+len(s.Locality)+len(s.StreetAddress)+len(s.PostalCode)+len(s.OrganizationalUnit)+len(s.ExtraNames) > 0 || s.SerialNumber != "" {
		return nil, attestation.Refuse(attestation.ReasonBadCSR, "the CSR's subject must hold only CN and O")
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) > 0 {
		return nil, attestation.Refuse(attestation.ReasonBadCSR, "a kubelet client CSR must not ask for subject alternative names")
	}
	if rerr := checkCSRKey(csr); rerr != nil {
		return nil, rerr
	}
	if rerr := checkCSRExtensions(csr); rerr != nil {
		return nil, rerr
	}
	return csr, nil
}

// checkCSRKey: a key the API server accepts for a kubelet client
// certificate: ECDSA P-256/P-384 or RSA of at least 2048 bits.
func checkCSRKey(csr *x509.CertificateRequest) *attestation.Error {
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
	}
	return attestation.Refuse(attestation.ReasonBadCSR, "the CSR's key must be ECDSA P-256/P-384 or RSA ≥ 2048 bits")
}

// checkCSRExtensions: requested extensions, if any, are only key usage
// (digital signature, key encipherment) and extended key usage (client auth).
func checkCSRExtensions(csr *x509.CertificateRequest) *attestation.Error {
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidKeyUsage):
			var bits asn1.BitString
			if rest, err := asn1.Unmarshal(ext.Value, &bits); err != nil || len(rest) != 0 {
				return attestation.Refuse(attestation.ReasonBadCSR, "the CSR's key usage extension does not parse")
			}
			for i := 0; i < bits.BitLength; i++ {
				if bits.At(i) == 1 && i != 0 && i != 2 { // digitalSignature(0), keyEncipherment(2)
					return attestation.Refuse(attestation.ReasonBadCSR, "the CSR asks for key usage bit %d; a kubelet client may have digital signature and key encipherment only", i)
				}
			}
		case ext.Id.Equal(oidExtKeyUsage):
			var oids []asn1.ObjectIdentifier
			if rest, err := asn1.Unmarshal(ext.Value, &oids); err != nil || len(rest) != 0 {
				return attestation.Refuse(attestation.ReasonBadCSR, "the CSR's extended key usage extension does not parse")
			}
			for _, oid := range oids {
				if !oid.Equal(oidClientAuth) {
					return attestation.Refuse(attestation.ReasonBadCSR, "the CSR asks for extended key usage %s; a kubelet client may have client auth only", oid)
				}
			}
		default:
			return attestation.Refuse(attestation.ReasonBadCSR, "the CSR asks for extension %s; a kubelet client CSR has none but key usages", ext.Id)
		}
	}
	return nil
}
