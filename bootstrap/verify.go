package bootstrap

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	"k8s.io/client-go/rest"
)

// ErrIssuedExpired means the API server handed back a certificate that has
// already expired (a CSR issued long ago for a key we kept).
var ErrIssuedExpired = errors.New("issued certificate expired")

// ErrNotYetValid means the certificate starts later than the clock skew
// allows: once the clocks agree the same certificate is good.
var ErrNotYetValid = errors.New("issued certificate is not valid before")

// VerifyOptions says what an issued certificate must chain to and when it is checked.
type VerifyOptions struct {
	// Roots are the CAs the kubelet signer is expected to use.
	Roots *x509.CertPool
	// Now is the time of the check.
	Now time.Time
	// Skew tolerates a NotBefore slightly in the future (clocks of node and
	// control plane differ).
	Skew time.Duration
}

// VerifyIssued checks a certificate chain returned for req before anything is
// written: it must be for our key, carry the requested subject, usage and
// SANs, be valid now (within the skew) and chain to opts.Roots. It returns the
// leaf certificate.
func VerifyIssued(chainPEM []byte, key crypto.Signer, req Request, opts VerifyOptions) (*x509.Certificate, error) {
	certs, err := ParseCertificates(chainPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, fmt.Errorf("issued certificate does not match our private key")
	}
	want := req.Subject()
	if leaf.Subject.CommonName != want.CommonName || !slices.Equal(leaf.Subject.Organization, want.Organization) {
		return nil, fmt.Errorf("issued certificate is for %q, want CN=%s,O=%s", leaf.Subject.String(), want.CommonName, want.Organization[0])
	}
	if !slices.Contains(leaf.ExtKeyUsage, req.Kind.ExtKeyUsage()) {
		return nil, fmt.Errorf("issued certificate lacks the %s extended key usage", usageName(req.Kind))
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("issued certificate lacks the digital signature key usage")
	}
	for _, d := range req.DNSNames {
		if !slices.Contains(leaf.DNSNames, d) {
			return nil, fmt.Errorf("issued certificate lacks the requested DNS name %q", d)
		}
	}
	for _, ip := range req.IPAddresses {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return nil, fmt.Errorf("issued certificate lacks the requested IP address %s", ip)
		}
	}
	at := opts.Now
	if at.Before(leaf.NotBefore) {
		if leaf.NotBefore.Sub(at) > opts.Skew {
			return nil, fmt.Errorf("%w %s, %s from now (more than the %s clock skew tolerated): check the clocks of this node and the control plane", ErrNotYetValid,
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotBefore.Sub(at).Round(time.Second), opts.Skew)
		}
		at = leaf.NotBefore
	}
	if !at.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w at %s", ErrIssuedExpired, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if opts.Roots == nil {
		return nil, fmt.Errorf("no CA to verify the issued certificate against")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: opts.Roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{req.Kind.ExtKeyUsage()},
	}); err != nil {
		return nil, fmt.Errorf("issued certificate does not chain to the expected CA (issuer %q): set issuerCAFile if kubelet certificates are signed by a separate CA: %w", leaf.Issuer.String(), err)
	}
	return leaf, nil
}

// ParseCertificates parses every CERTIFICATE block in data, leaf first.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM certificate found")
	}
	return certs, nil
}

func usageName(k Kind) string {
	if k == Serving {
		return "server auth"
	}
	return "client auth"
}

// ipStrings renders IPs for logs.
func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// ClientCertificate returns the leaf client certificate a rest config uses.
func ClientCertificate(rc *rest.Config) (*x509.Certificate, error) {
	_, leaf, err := clientCertificate(rc)
	return leaf, err
}

// clientCertificate returns the PEM a rest config's client certificate comes
// from and its leaf.
func clientCertificate(rc *rest.Config) ([]byte, *x509.Certificate, error) {
	data := rc.CertData
	if len(data) == 0 && rc.CertFile != "" {
		var err error
		if data, err = os.ReadFile(rc.CertFile); err != nil {
			return nil, nil, fmt.Errorf("reading client certificate: %w", err)
		}
	}
	if len(data) == 0 {
		return nil, nil, errors.New("the kubeconfig has no client certificate")
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, nil, err
	}
	return data, certs[0], nil
}

// caPool returns the CAs an issued certificate must chain to: issuerCAFile if
// set, else the cluster CA of the kubeconfig it was asked for with.
func caPool(rc *rest.Config, issuerCAFile string) (*x509.CertPool, error) {
	var data []byte
	var src string
	switch {
	case issuerCAFile != "":
		src = issuerCAFile
	case len(rc.CAData) > 0:
		data, src = rc.CAData, "certificate-authority-data"
	case rc.CAFile != "":
		src = rc.CAFile
	default:
		return nil, errors.New("the kubeconfig names no certificate authority to verify issued certificates against: set issuerCAFile in the certagent config")
	}
	if data == nil {
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return nil, fmt.Errorf("reading issuer CA: %w", err)
		}
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("reading issuer CA from %s: %w", src, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
