package controlplane

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"time"
)

// NewCAName is the CommonName of the CA AddCA makes.
const NewCAName = "certagent-test-ca-2"

// caRotation is a CA rotation in progress: the new CA beside the old one.
type caRotation struct {
	oldPEM, newPEM    []byte
	ca                *x509.Certificate
	key               crypto.Signer
	certFile, keyFile string
}

// setUpTrustBundle points TrustBundleFile at CAFile, or with
// PublishServingTrust at a bundle file of its own that starts as CAFile's copy.
func (cp *ControlPlane) setUpTrustBundle() error {
	cp.TrustBundleFile = cp.CAFile
	if !cp.publishTrust {
		return nil
	}
	cp.TrustBundleFile = filepath.Join(cp.Dir, "pki", "ca-bundle.crt")
	return writeFileAtomic(cp.TrustBundleFile, cp.CACertPEM, 0o644)
}

// OldCACertPEM is the CA the control plane started with.
func (cp *ControlPlane) OldCACertPEM() []byte {
	if cp.rotation != nil {
		return cp.rotation.oldPEM
	}
	return cp.CACertPEM
}

// NewCACertPEM is the CA AddCA made (CN NewCAName), nil before AddCA.
func (cp *ControlPlane) NewCACertPEM() []byte {
	if cp.rotation == nil {
		return nil
	}
	return cp.rotation.newPEM
}

// AddCA is a CA rotation's phase 1, trust the new CA: it makes a new CA and
// makes TrustBundleFile (the API server's --client-ca-file and
// --kubelet-certificate-authority, the controller-manager's --root-ca-file)
// and the admin and controller-manager kubeconfigs' CA data old + new. It
// restarts the API server, which re-reads --client-ca-file by itself but
// --kubelet-certificate-authority only every 5 minutes (client-go's CA file
// reload), and the controller-manager, which reads --root-ca-file only at
// start, and returns once the published kube-apiserver-serving
// ClusterTrustBundle holds both CAs. It needs PublishServingTrust.
func (cp *ControlPlane) AddCA(ctx context.Context) error {
	if !cp.publishTrust || cp.rotation != nil {
		return fmt.Errorf("add CA: needs Options.PublishServingTrust and no rotation begun (began: %v)", cp.rotation != nil)
	}
	der, key, err := newCA(NewCAName)
	if err != nil {
		return fmt.Errorf("add CA: %w", err)
	}
	r := &caRotation{oldPEM: cp.CACertPEM, key: key,
		certFile: filepath.Join(cp.Dir, "pki", "ca-2.crt"), keyFile: filepath.Join(cp.Dir, "pki", "ca-2.key")}
	if r.ca, err = x509.ParseCertificate(der); err != nil {
		return fmt.Errorf("add CA: parsing it: %w", err)
	}
	if r.newPEM, _, err = writeCertAndKey(r.certFile, r.keyFile, der, key); err != nil {
		return fmt.Errorf("add CA: %w", err)
	}
	cp.rotation = r
	if err := cp.setTrust(ctx, append(slices.Clip(r.oldPEM), r.newPEM...), true); err != nil {
		return fmt.Errorf("add CA: %w", err)
	}
	return nil
}

// setTrust writes bundle to TrustBundleFile and into the client
// kubeconfigs, restarts the controller-manager (and the API server if asked)
// and waits for the serving signer's published bundle to be bundle.
func (cp *ControlPlane) setTrust(ctx context.Context, bundle []byte, restartAPIServer bool) error {
	if err := writeFileAtomic(cp.TrustBundleFile, bundle, 0o644); err != nil {
		return err
	}
	cp.clientCAPEM = bundle
	if err := cp.rewriteClientConfigs(); err != nil {
		return err
	}
	if restartAPIServer {
		if err := cp.StopAPIServer(); err != nil {
			return err
		}
		if err := cp.StartAPIServer(ctx); err != nil {
			return err
		}
	}
	if err := cp.restartControllerManager(ctx); err != nil {
		return err
	}
	return cp.WaitPublished(ctx, ServingSigner, bundle)
}

// rewriteClientConfigs rebuilds the admin client and rewrites the admin and
// controller-manager kubeconfigs from the current client credentials and CAs.
func (cp *ControlPlane) rewriteClientConfigs() error {
	if err := cp.setupAdmin(); err != nil {
		return err
	}
	return cp.writeControllerManagerKubeconfig()
}

func (cp *ControlPlane) restartControllerManager(ctx context.Context) error {
	if err := cp.StopControllerManager(); err != nil {
		return err
	}
	return cp.StartControllerManager(ctx)
}

// SwitchServing is phase 2, serve from the new CA: the API server's serving
// certificate, with the same names, re-issued by the new CA; the API server
// reloads --tls-cert-file by itself, and SwitchServing returns once it
// presents the new certificate.
func (cp *ControlPlane) SwitchServing(ctx context.Context) error {
	if cp.rotation == nil {
		return fmt.Errorf("switch serving certificate: AddCA first")
	}
	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if _, _, err := cp.rotation.replace(serving, cp.pki.ServingCert, cp.pki.ServingKey); err != nil {
		return fmt.Errorf("switch serving certificate: %w", err)
	}
	if err := cp.waitServedBy(ctx, cp.rotation.ca); err != nil {
		return fmt.Errorf("switch serving certificate: %w", err)
	}
	return nil
}

// replace issues tmpl from the new CA and replaces keyPath, then certPath,
// each atomically (a reader of both between the two sees a mismatched pair,
// which the API server's reloaders refuse and retry).
func (r *caRotation) replace(tmpl *x509.Certificate, certPath, keyPath string) (certPEM, keyPEM []byte, err error) {
	der, key, err := issueLeaf(tmpl, r.ca, r.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshalling key for %s: %w", keyPath, err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, writeFileAtomic(certPath, certPEM, 0o644)
}

// ServingCert is the certificate the API server presents now.
func (cp *ControlPlane) ServingCert(ctx context.Context) (*x509.Certificate, error) {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
	conn, err := d.DialContext(ctx, "tcp", cp.URL[len("https://"):])
	if err != nil {
		return nil, fmt.Errorf("dialing the API server: %w", err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// waitServedBy waits until the API server presents a certificate ca signed.
func (cp *ControlPlane) waitServedBy(ctx context.Context, ca *x509.Certificate) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for {
		c, err := cp.ServingCert(ctx)
		if err == nil && c.CheckSignatureFrom(ca) == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the API server does not present a certificate of %s (%v): %w", ca.Subject.CommonName, err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
