package tpm

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"regexp"

	"github.com/certagent/certagent/protocol/attestation"
)

var caHashPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// pinCA makes cfg accept the service's certificate only if it chains to a CA
// in the chain the service sends whose key has hash (attestation.ServiceCAHash),
// valid for serving the name dialed: the user-data carries that hash instead
// of the CA itself, as kubeadm's discovery hash does.
func pinCA(cfg *tls.Config, hash string) error {
	if !caHashPattern.MatchString(hash) {
		return fmt.Errorf("the attestation service's CA hash %q is not sha256:<64 hex digits> (certagent-cluster init-tls prints it)", hash)
	}
	cfg.InsecureSkipVerify = true // verified below, against the pinned CA only
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyPinned(cs, hash)
	}
	return nil
}

// verifyPinned checks the handshake's chain against the CA pinned by hash.
func verifyPinned(cs tls.ConnectionState, hash string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the attestation service sent no certificate")
	}
	roots := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		if c.IsCA && attestation.ServiceCAHash(c) == hash {
			roots.AddCert(c)
		}
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the attestation service's certificate does not chain to the CA pinned by %s: %w", hash, err)
	}
	return nil
}
