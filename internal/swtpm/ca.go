// Package swtpm runs software TPMs (Debian's swtpm) for tests: a local
// manufacturer CA of the test's own, and one swtpm process per simulated node,
// manufactured with an EK certificate from that CA and reached over TCP.
//
// It is test support: nothing in the node or cluster binaries imports it.
// A missing swtpm is an error, never a skip: `make tpm-deps` installs it.
//
// In a test (each call makes a new TPM, killed at t's cleanup):
//
//	ca := swtpm.NewTestCA(t, "vendor")   // the TPM maker: ca.Roots(), ca.Intermediates()
//	node := swtpm.StartTest(t, ca)       // manufactured (new EK + certificates) and running
//	tpm.Enrollment(node.Path())          // "tcp://127.0.0.1:P", what certagent opens
//	node.Restart()                       // a power cycle: transient state gone, seeds kept
//
// Outside a test (a demo, a fleet): NewCA, Manufacture, Start and Stop. swtpm
// serves one connection at a time: close one before opening the next.
package swtpm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// CA is a TPM manufacturer CA of a test's own: a root and an intermediate
// whose key swtpm_localca uses to sign EK and platform certificates. It never
// touches /var/lib/swtpm-localca.
type CA struct {
	// Dir holds the CA's files (localca config, signing key, certificates).
	Dir string
	// Root is the self-signed root; Intermediate is the issuer of the EK
	// certificates, signed by Root.
	Root, Intermediate *x509.Certificate

	setupConf string // swtpm_setup config naming this CA
}

// NewCA makes a CA in dir (created if missing). name distinguishes the CAs of
// one test in their subjects (e.g. "trusted", "rogue").
func NewCA(dir, name string) (*CA, error) {
	localca, err := lookTool("swtpm_localca")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating CA directory: %w", err)
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating root key: %w", err)
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating issuer key: %w", err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"certagent test"}, CommonName: name + " TPM manufacturer root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("signing root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, fmt.Errorf("parsing root: %w", err)
	}
	issuerTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{Organization: []string{"certagent test"}, CommonName: name + " TPM EK issuer"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, issuerTmpl, root, &issuerKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("signing issuer: %w", err)
	}
	issuer, err := x509.ParseCertificate(issuerDER)
	if err != nil {
		return nil, fmt.Errorf("parsing issuer: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(issuerKey)
	if err != nil {
		return nil, fmt.Errorf("encoding issuer key: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{"signkey.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600},
		{"issuercert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuerDER}), 0o644},
		{"rootcert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), 0o644},
		{"certserial", []byte("10\n"), 0o644},
		{"localca.conf", fmt.Appendf(nil, "statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			dir, filepath.Join(dir, "signkey.pem"), filepath.Join(dir, "issuercert.pem"), filepath.Join(dir, "certserial")), 0o644},
		{"localca.options", []byte("--platform-manufacturer certagent\n--platform-version 2.1\n--platform-model swtpm\n"), 0o644},
		{"swtpm_setup.conf", fmt.Appendf(nil, "create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			localca, filepath.Join(dir, "localca.conf"), filepath.Join(dir, "localca.options")), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return nil, fmt.Errorf("writing CA file %s: %w", f.name, err)
		}
	}
	return &CA{Dir: dir, Root: root, Intermediate: issuer, setupConf: filepath.Join(dir, "swtpm_setup.conf")}, nil
}

// Roots is a pool with the CA's root.
func (c *CA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Root)
	return p
}

// Intermediates is a pool with the CA's EK issuer.
func (c *CA) Intermediates() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Intermediate)
	return p
}
