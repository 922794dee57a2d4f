package attestation

import (
	"crypto/sha256"
	"encoding/hex"
)

// EKHash is how an operator names a TPM: "sha256:" and the hex SHA-256 of
// the EK's public key in PKIX DER.
func EKHash(ekPublicPKIX []byte) string {
	sum := sha256.Sum256(ekPublicPKIX)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// QualifyingData is what the AK's quote must carry as its extraData:
// SHA-256(nonce || SHA-256(CSR DER)). It binds the CSR to this exchange: a
// quote made for one CSR or one nonce is worth nothing for another.
func QualifyingData(nonce, csrDER []byte) []byte {
	csrSum := sha256.Sum256(csrDER)
	h := sha256.New()
	h.Write(nonce)
	h.Write(csrSum[:])
	return h.Sum(nil)
}
