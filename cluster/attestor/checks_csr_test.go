package attestor

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"testing"

	"github.com/certagent/certagent/protocol/attestation"
)

func csrDER(t *testing.T, key crypto.Signer, tmpl x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestCheckCSR(t *testing.T) {
	key := ecKey(t, elliptic.P256())
	kubelet := pkix.Name{CommonName: "system:node:node-a", Organization: []string{"system:nodes"}}
	ext := func(id asn1.ObjectIdentifier, v any) x509.CertificateRequest {
		return x509.CertificateRequest{Subject: kubelet, ExtraExtensions: []pkix.Extension{{Id: id, Value: mustASN1(t, v)}}}
	}
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := csrDER(t, key, x509.CertificateRequest{Subject: kubelet})
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-1] ^= 1 // the signature's last byte
	for _, tc := range []struct {
		name string
		der  []byte
		want attestation.Reason
	}{
		{"kubelet client CSR, ECDSA", good, ""},
		{"kubelet client CSR, RSA 2048", csrDER(t, rsaKey(t, 0), x509.CertificateRequest{Subject: kubelet}), ""},
		{"with client-kubelet usages requested", csrDER(t, key, ext(oidExtKeyUsage, []asn1.ObjectIdentifier{oidClientAuth})), ""},
		{"with key usage digital signature", csrDER(t, key, ext(oidKeyUsage, asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})), ""},
		{"another node's CN", csrDER(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:node-b", Organization: []string{"system:nodes"}}}), attestation.ReasonNameMismatch},
		{"a user's CN", csrDER(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:nodes"}}}), attestation.ReasonNameMismatch},
		{"system:masters", csrDER(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:node-a", Organization: []string{"system:nodes", "system:masters"}}}), attestation.ReasonBadCSR},
		{"no organization", csrDER(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:node-a"}}), attestation.ReasonBadCSR},
		{"an OU", csrDER(t, key, x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:node-a", Organization: []string{"system:nodes"}, OrganizationalUnit: []string{"x"}}}), attestation.ReasonBadCSR},
		{"a DNS name", csrDER(t, key, x509.CertificateRequest{Subject: kubelet, DNSNames: []string{"node-a"}}), attestation.ReasonBadCSR},
		{"an IP address", csrDER(t, key, x509.CertificateRequest{Subject: kubelet, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), attestation.ReasonBadCSR},
		{"server auth", csrDER(t, key, ext(oidExtKeyUsage, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})), attestation.ReasonBadCSR},
		{"key usage cert sign", csrDER(t, key, ext(oidKeyUsage, asn1.BitString{Bytes: []byte{0x04}, BitLength: 6})), attestation.ReasonBadCSR},
		{"basic constraints CA", csrDER(t, key, ext(asn1.ObjectIdentifier{2, 5, 29, 19}, struct{ IsCA bool }{true})), attestation.ReasonBadCSR},
		{"RSA 1024", csrDER(t, rsa1024, x509.CertificateRequest{Subject: kubelet}), attestation.ReasonBadCSR},
		{"P-224", csrDER(t, ecKey(t, elliptic.P224()), x509.CertificateRequest{Subject: kubelet}), attestation.ReasonBadCSR},
		{"signature does not verify", tampered, attestation.ReasonBadCSR},
		{"not a CSR", []byte("junk"), attestation.ReasonBadCSR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got := checkCSR(tc.der, "node-a")
			wantReason(t, got, tc.want)
		})
	}
}
