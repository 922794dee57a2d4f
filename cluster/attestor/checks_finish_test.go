package attestor

import (
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/certagent/certagent/protocol/attestation"
)

func TestCheckSecret(t *testing.T) {
	want := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name string
		got  []byte
		want attestation.Reason
	}{
		{"the secret", []byte("0123456789abcdef0123456789abcdef"), ""},
		{"one byte off", []byte("0123456789abcdef0123456789abcdeF"), attestation.ReasonBadSecret},
		{"a prefix", want[:16], attestation.ReasonBadSecret},
		{"empty", nil, attestation.ReasonBadSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReason(t, checkSecret(want, tc.got), tc.want)
		})
	}
}

func TestCheckQuoteSignature(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	ak := &ak{pub: &key.PublicKey}
	attest := tpm2.Marshal(quoteAttest([]byte("qualifying data")))
	good := tpm2.Marshal(ecdsaSignature(t, key, attest))
	otherAttest := tpm2.Marshal(quoteAttest([]byte("other data")))
	sha1Sig := ecdsaSignature(t, key, attest)
	ecc, _ := sha1Sig.Signature.ECDSA()
	ecc.Hash = tpm2.TPMAlgSHA1
	for _, tc := range []struct {
		name   string
		attest []byte
		sig    []byte
		want   attestation.Reason
	}{
		{"signed by the AK", attest, good, ""},
		{"signed by another key", attest, tpm2.Marshal(ecdsaSignature(t, ecKey(t, elliptic.P256()), attest)), attestation.ReasonBadSignature},
		{"the signature of other data", otherAttest, good, attestation.ReasonBadSignature},
		{"says SHA-1", attest, tpm2.Marshal(sha1Sig), attestation.ReasonBadSignature},
		{"an RSA signature", attest, tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA, &tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA256, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}})}), attestation.ReasonBadSignature},
		{"trailing bytes", attest, append(append([]byte(nil), good...), 0), attestation.ReasonBadSignature},
		{"truncated", attest, good[:10], attestation.ReasonBadSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReason(t, checkQuoteSignature(ak, tc.attest, tc.sig), tc.want)
		})
	}
}

func TestCheckQuoteData(t *testing.T) {
	qd := attestation.QualifyingData([]byte("nonce nonce nonce nonce nonce 32"), []byte("csr"))
	certify := quoteAttest(qd)
	certify.Type = tpm2.TPMSTAttestCertify
	certify.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{})
	good := tpm2.Marshal(quoteAttest(qd))
	notGenerated := append([]byte(nil), good...)
	notGenerated[0] ^= 0xff // TPM_GENERATED_VALUE: what TPM2_Sign refuses to sign for a restricted key
	for _, tc := range []struct {
		name   string
		attest []byte
		want   attestation.Reason
	}{
		{"quote over this exchange", good, ""},
		{"quote over another nonce", tpm2.Marshal(quoteAttest(attestation.QualifyingData([]byte("another nonce another nonce 32.."), []byte("csr")))), attestation.ReasonBadQuote},
		{"quote over another CSR", tpm2.Marshal(quoteAttest(attestation.QualifyingData([]byte("nonce nonce nonce nonce nonce 32"), []byte("other csr")))), attestation.ReasonBadQuote},
		{"no extra data", tpm2.Marshal(quoteAttest(nil)), attestation.ReasonBadQuote},
		{"a certify, not a quote", tpm2.Marshal(certify), attestation.ReasonBadQuote},
		{"not TPM-generated", notGenerated, attestation.ReasonBadQuote},
		{"trailing bytes", append(append([]byte(nil), good...), 0), attestation.ReasonBadQuote},
		{"junk", []byte("junk"), attestation.ReasonBadQuote},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReason(t, checkQuoteData(tc.attest, qd), tc.want)
		})
	}
}

func TestCheckIssued(t *testing.T) {
	ca := newTestCA(t, "kubernetes", nil)
	key := ecKey(t, elliptic.P256())
	csr, err := x509.ParseCertificateRequest(csrDER(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:node-a", Organization: []string{"system:nodes"}}}))
	if err != nil {
		t.Fatal(err)
	}
	issue := func(pub any, cn string) []byte {
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour),
		}, ca.cert, pub, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	for _, tc := range []struct {
		name  string
		chain []byte
		want  attestation.Reason
	}{
		{"for the CSR's key and node", issue(&key.PublicKey, "system:node:node-a"), ""},
		{"for another key", issue(&ecKey(t, elliptic.P256()).PublicKey, "system:node:node-a"), attestation.ReasonIssueFailed},
		{"for another node", issue(&key.PublicKey, "system:node:node-b"), attestation.ReasonIssueFailed},
		{"not PEM", []byte("junk"), attestation.ReasonIssueFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantReason(t, checkIssued(tc.chain, csr, "node-a"), tc.want)
		})
	}
}
