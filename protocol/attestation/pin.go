package attestation

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
)

// ServiceCAHash is how a node's user-data may pin the attestation service's
// CA instead of carrying it: "sha256:" and the hex SHA-256 of the CA
// certificate's SubjectPublicKeyInfo, the form of kubeadm's
// --discovery-token-ca-cert-hash. `certagent-cluster init-tls` prints it;
// the service sends its CA after its certificate, so a node can find the
// pinned CA in the handshake and verify the service's certificate against it.
func ServiceCAHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}
