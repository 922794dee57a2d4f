package attestor

import (
	"crypto/elliptic"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzTPMStructures: whatever bytes a node sends as an AK public area, an
// attestation or a signature, the checks refuse or accept; they never panic
// (go-tpm's reflection would, on some input, without unmarshalCanonical).
func FuzzTPMStructures(f *testing.F) {
	key := ecKey(&testing.T{}, elliptic.P256())
	attest := tpm2.Marshal(quoteAttest(make([]byte, 32)))
	f.Add(tpm2bPublic(akPublic(&key.PublicKey)), attest, tpm2.Marshal(ecdsaSignature(&testing.T{}, key, attest)))
	f.Add([]byte{0, 2, 0, 0x23}, []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0, 0x18, 0, 0x0b})
	f.Fuzz(func(t *testing.T, akBytes, attest, sig []byte) {
		if k, rerr := parseAK(akBytes); rerr == nil {
			_ = checkQuoteSignature(k, attest, sig)
		}
		_ = checkQuoteSignature(&ak{pub: &key.PublicKey}, attest, sig)
		_ = checkQuoteData(attest, make([]byte, 32))
	})
}
