package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pkiFiles are the paths of the certificates and keys Start generates.
type pkiFiles struct {
	CACert, CAKey           string
	ServingCert, ServingKey string
	SAKey, SAPub            string
	AdminCert, AdminKey     string
	KCMCert, KCMKey         string
	// KubeletClientCert/Key are the API server's client certificate for
	// its connections to kubelets (logs, exec, the node proxy).
	KubeletClientCert, KubeletClientKey string
	caCertPEM, adminCertPEM             []byte
	adminKeyPEM                         []byte
	kcmCertPEM, kcmKeyPEM               []byte
	ca                                  *x509.Certificate
	caKey                               crypto.Signer
}

// certValidity is how long generated certificates are valid; tests never
// outlive it.
const certValidity = 10 * 365 * 24 * time.Hour

// generatePKI creates a fresh ECDSA P-256 cluster CA and, signed by it, the
// apiserver serving certificate (SANs 127.0.0.1, localhost and bind), an admin
// client certificate (CN=certagent-admin, O=system:masters), a
// controller-manager client certificate, the apiserver's client certificate
// for kubelets (CN=kube-apiserver-kubelet-client, O=system:masters, as
// kubeadm makes it), and a service-account key pair, all written as PEM under
// dir.
func generatePKI(dir string, bind net.IP) (*pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki dir: %w", err)
	}
	p := &pkiFiles{
		CACert: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key"),
		ServingCert: filepath.Join(dir, "apiserver.crt"), ServingKey: filepath.Join(dir, "apiserver.key"),
		SAKey: filepath.Join(dir, "sa.key"), SAPub: filepath.Join(dir, "sa.pub"),
		AdminCert: filepath.Join(dir, "admin.crt"), AdminKey: filepath.Join(dir, "admin.key"),
		KCMCert: filepath.Join(dir, "controller-manager.crt"), KCMKey: filepath.Join(dir, "controller-manager.key"),
		KubeletClientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		KubeletClientKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
	}

	caDER, caKey, err := newCA("certagent-test-ca")
	if err != nil {
		return nil, err
	}
	if p.ca, err = x509.ParseCertificate(caDER); err != nil {
		return nil, fmt.Errorf("parse CA: %w", err)
	}
	p.caKey = caKey
	if p.caCertPEM, _, err = writeCertAndKey(p.CACert, p.CAKey, caDER, caKey); err != nil {
		return nil, err
	}

	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if !bind.IsLoopback() {
		serving.IPAddresses = append(serving.IPAddresses, bind)
	}
	if _, _, err := p.issue(serving, p.ServingCert, p.ServingKey); err != nil {
		return nil, fmt.Errorf("apiserver serving cert: %w", err)
	}
	if err := p.issueClients(); err != nil {
		return nil, err
	}
	kubeletClient := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if _, _, err := p.issue(kubeletClient, p.KubeletClientCert, p.KubeletClientKey); err != nil {
		return nil, fmt.Errorf("apiserver kubelet client cert: %w", err)
	}

	saKey, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("generate service-account key: %w", err)
	}
	if _, err := writeKey(p.SAKey, saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("marshal service-account public key: %w", err)
	}
	if _, err := writePEM(p.SAPub, "PUBLIC KEY", pubDER, 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// issueClients issues the admin and controller-manager client certificates
// with the current CA.
func (p *pkiFiles) issueClients() error {
	var err error
	admin := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "certagent-admin", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if p.adminCertPEM, p.adminKeyPEM, err = p.issue(admin, p.AdminCert, p.AdminKey); err != nil {
		return fmt.Errorf("admin client cert: %w", err)
	}
	kcm := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "system:kube-controller-manager", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if p.kcmCertPEM, p.kcmKeyPEM, err = p.issue(kcm, p.KCMCert, p.KCMKey); err != nil {
		return fmt.Errorf("controller-manager client cert: %w", err)
	}
	return nil
}

// newCA makes a self-signed ECDSA P-256 CA named cn, valid from an hour ago
// (so the later of two CAs has the later NotBefore) for certValidity.
func newCA(cn string) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := sign(tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign CA %s: %w", cn, err)
	}
	return der, key, nil
}

// issue signs tmpl (a leaf certificate) with the CA using a fresh key and
// writes certificate and key to certPath and keyPath.
func (p *pkiFiles) issue(tmpl *x509.Certificate, certPath, keyPath string) (certPEM, keyPEM []byte, err error) {
	der, key, err := issueLeaf(tmpl, p.ca, p.caKey)
	if err != nil {
		return nil, nil, err
	}
	return writeCertAndKey(certPath, keyPath, der, key)
}

// issueLeaf signs tmpl with ca using a fresh key, valid from an hour ago for
// certValidity.
func issueLeaf(tmpl, ca *x509.Certificate, caKey crypto.Signer) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	now := time.Now()
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.BasicConstraintsValid = true
	der, err := sign(tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return der, key, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// sign creates a certificate from tmpl with a random serial number.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return der, nil
}

// writeCertAndKey writes a DER certificate and its key as PEM files and
// returns both PEM encodings.
func writeCertAndKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// writeKey writes key as a PKCS#8 "PRIVATE KEY" PEM file with mode 0600 and
// returns the PEM.
func writeKey(path string, key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key for %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM writes one PEM block to path and returns the encoded bytes.
func writePEM(path, typ string, der []byte, mode os.FileMode) ([]byte, error) {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return data, nil
}
