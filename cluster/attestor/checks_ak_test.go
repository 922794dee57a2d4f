package attestor

import (
	"crypto/elliptic"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/certagent/certagent/protocol/attestation"
)

func TestParseAK(t *testing.T) {
	key := &ecKey(t, elliptic.P256()).PublicKey
	with := func(change func(*tpm2.TPMTPublic)) []byte {
		p := akPublic(key)
		change(&p)
		return tpm2bPublic(p)
	}
	scheme := func(alg tpm2.TPMAlgID, hash tpm2.TPMAlgID, curve tpm2.TPMECCCurve) func(*tpm2.TPMTPublic) {
		return func(p *tpm2.TPMTPublic) {
			s := tpm2.TPMTECCScheme{Scheme: alg}
			if alg == tpm2.TPMAlgECDSA {
				s.Details = tpm2.NewTPMUAsymScheme(alg, &tpm2.TPMSSigSchemeECDSA{HashAlg: hash})
			}
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme:    s,
				CurveID:   curve,
				KDF:       tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			})
		}
	}
	good := tpm2bPublic(akPublic(key))
	for _, tc := range []struct {
		name string
		b    []byte
		want attestation.Reason
	}{
		{"the node's AK", good, ""},
		{"not restricted (could sign a forged quote)", with(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }), attestation.ReasonBadAK},
		{"not fixedTPM (could be a key from outside)", with(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }), attestation.ReasonBadAK},
		{"not fixedParent", with(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }), attestation.ReasonBadAK},
		{"not sensitiveDataOrigin (imported private key)", with(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }), attestation.ReasonBadAK},
		{"not a signing key", with(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = false }), attestation.ReasonBadAK},
		{"also a decryption key", with(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true }), attestation.ReasonBadAK},
		{"SHA-1 name", with(func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }), attestation.ReasonBadAK},
		{"ECDSA with SHA-1", with(scheme(tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA1, tpm2.TPMECCNistP256)), attestation.ReasonBadAK},
		{"no scheme (would sign with any the caller names)", with(scheme(tpm2.TPMAlgNull, 0, tpm2.TPMECCNistP256)), attestation.ReasonBadAK},
		{"P-384", with(scheme(tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA256, tpm2.TPMECCNistP384)), attestation.ReasonBadAK},
		{"an RSA key", tpm2bPublic(tpm2.RSASRKTemplate), attestation.ReasonBadAK},
		{"size prefix wrong", append(good, 0), attestation.ReasonBadAK},
		{"trailing bytes inside the TPM2B", func() []byte {
			inner := append(tpm2.Marshal(akPublic(key)), 0, 0)
			return append([]byte{byte(len(inner) >> 8), byte(len(inner))}, inner...)
		}(), attestation.ReasonBadAK},
		{"empty", nil, attestation.ReasonBadAK},
		{"truncated", good[:20], attestation.ReasonBadAK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, rerr := parseAK(tc.b)
			wantReason(t, rerr, tc.want)
			if rerr == nil && !got.pub.Equal(key) {
				t.Error("the AK's public key is not the one in its public area")
			}
		})
	}
}
