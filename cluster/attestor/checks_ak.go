package attestor

import (
	"crypto/ecdsa"
	"encoding/binary"

	"github.com/google/go-tpm/tpm2"

	"github.com/certagent/certagent/protocol/attestation"
)

// ak is the attestation key as the service knows it: its TPM name (what the
// credential is bound to) and its public key (what verifies the quote).
type ak struct {
	name tpm2.TPM2BName
	pub  *ecdsa.PublicKey
}

// parseAK reads the AK's TPM2B_PUBLIC and checks it (checkAKAttributes). The
// public area must be encoded canonically, so the attributes checked are
// exactly those hashed into the name the TPM will compare when it activates
// the credential.
func parseAK(b []byte) (*ak, *attestation.Error) {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		return nil, attestation.Refuse(attestation.ReasonBadAK, "akPublic is not a TPM2B_PUBLIC")
	}
	area := b[2:]
	pub, err := unmarshalCanonical[tpm2.TPMTPublic](area)
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadAK, "akPublic is not a TPMT_PUBLIC: %v", err)
	}
	if rerr := checkAKAttributes(pub); rerr != nil {
		return nil, rerr
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadAK, "computing the AK's name: %v", err)
	}
	params, _ := pub.Parameters.ECCDetail() // checked by checkAKAttributes
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadAK, "akPublic has no ECC point: %v", err)
	}
	key, err := tpm2.ECDSAPub(params, point)
	if err != nil {
		return nil, attestation.Refuse(attestation.ReasonBadAK, "akPublic's point is not a P-256 public key: %v", err)
	}
	return &ak{name: *name, pub: key}, nil
}

// checkAKAttributes: the AK is a key the TPM made (sensitiveDataOrigin),
// cannot leave (fixedTPM, fixedParent; a key loaded from outside could not
// have these, so its private half was never outside), and that signs only
// TPM-generated structures (restricted, sign, not decrypt), so its signature
// over a TPMS_ATTEST is the TPM's word. ECC P-256 with ECDSA-SHA256 and a
// SHA-256 name, the one kind the node creates.
func checkAKAttributes(pub *tpm2.TPMTPublic) *attestation.Error {
	if pub.Type != tpm2.TPMAlgECC {
		return attestation.Refuse(attestation.ReasonBadAK, "the AK must be an ECC key, is type 0x%x", uint16(pub.Type))
	}
	if pub.NameAlg != tpm2.TPMAlgSHA256 {
		return attestation.Refuse(attestation.ReasonBadAK, "the AK's name algorithm must be SHA-256, is 0x%x", uint16(pub.NameAlg))
	}
	a := pub.ObjectAttributes
	for _, want := range []struct {
		name      string
		got, want bool
	}{
		{"fixedTPM", a.FixedTPM, true},
		{"fixedParent", a.FixedParent, true},
		{"sensitiveDataOrigin", a.SensitiveDataOrigin, true},
		{"restricted", a.Restricted, true},
		{"sign", a.SignEncrypt, true},
		{"decrypt", a.Decrypt, false},
	} {
		if want.got != want.want {
			return attestation.Refuse(attestation.ReasonBadAK, "the AK's %s attribute must be %t", want.name, want.want)
		}
	}
	params, err := pub.Parameters.ECCDetail()
	if err != nil {
		return attestation.Refuse(attestation.ReasonBadAK, "the AK has no ECC parameters: %v", err)
	}
	if params.CurveID != tpm2.TPMECCNistP256 {
		return attestation.Refuse(attestation.ReasonBadAK, "the AK must be on NIST P-256, is curve 0x%x", uint16(params.CurveID))
	}
	if params.Scheme.Scheme != tpm2.TPMAlgECDSA {
		return attestation.Refuse(attestation.ReasonBadAK, "the AK's scheme must be ECDSA, is 0x%x", uint16(params.Scheme.Scheme))
	}
	ecdsaScheme, err := params.Scheme.Details.ECDSA()
	if err != nil || ecdsaScheme.HashAlg != tpm2.TPMAlgSHA256 {
		return attestation.Refuse(attestation.ReasonBadAK, "the AK's ECDSA scheme must use SHA-256")
	}
	return nil
}
