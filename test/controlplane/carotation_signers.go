package controlplane

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"slices"
)

// SwitchSigners is phase 3, sign from the new CA: CAFile, CAKeyFile and
// CACertPEM become the new CA's, the controller-manager's
// --cluster-signing-cert-file and --cluster-signing-key-file name them (it
// would reload its signing files, but the paths and its kubeconfig change:
// it is restarted), the admin and controller-manager client certificates
// are re-issued by the new CA, and the kubelet signers' ClusterTrustBundles
// are published with old + new (the newest, the new CA, is the one they
// issue from). Certificates UserConfig makes come from the new CA too.
func (cp *ControlPlane) SwitchSigners(ctx context.Context) error {
	r := cp.rotation
	if r == nil {
		return fmt.Errorf("switch signers: AddCA first")
	}
	cp.pki.ca, cp.pki.caKey = r.ca, r.key
	if err := cp.pki.issueClients(); err != nil {
		return fmt.Errorf("switch signers: %w", err)
	}
	cp.CAFile, cp.CAKeyFile, cp.CACertPEM = r.certFile, r.keyFile, r.newPEM
	if err := cp.rewriteClientConfigs(); err != nil {
		return fmt.Errorf("switch signers: %w", err)
	}
	if err := cp.restartControllerManager(ctx); err != nil {
		return fmt.Errorf("switch signers: %w", err)
	}
	if err := cp.publishKubeletSignerTrust(ctx, append(slices.Clip(r.oldPEM), r.newPEM...)); err != nil {
		return fmt.Errorf("switch signers: %w", err)
	}
	return nil
}

// SwitchKubeletClient is phase 4, call kubelets as the new CA: the API
// server's --kubelet-client-certificate and key re-issued by the new CA.
// No restart: the API server's kubelet client re-reads that pair at most
// once a second (client-go's cachingCertificateLoader), for each new
// connection to a kubelet.
func (cp *ControlPlane) SwitchKubeletClient(ctx context.Context) error {
	if cp.rotation == nil {
		return fmt.Errorf("switch kubelet client certificate: AddCA first")
	}
	kubeletClient := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if _, _, err := cp.rotation.replace(kubeletClient, cp.pki.KubeletClientCert, cp.pki.KubeletClientKey); err != nil {
		return fmt.Errorf("switch kubelet client certificate: %w", err)
	}
	return nil
}

// RemoveOldCA is phase 5, drop the old CA: TrustBundleFile, the client
// kubeconfigs' CA data and the kubelet signers' ClusterTrustBundles hold
// the new CA only; the controller-manager is restarted for its
// --root-ca-file, the API server re-reads --client-ca-file by itself (and
// --kubelet-certificate-authority within 5 minutes, which only narrows it).
// It returns once the published serving bundle is the new CA alone.
func (cp *ControlPlane) RemoveOldCA(ctx context.Context) error {
	r := cp.rotation
	if r == nil || !cp.pki.ca.Equal(r.ca) {
		return fmt.Errorf("remove old CA: AddCA and SwitchSigners first")
	}
	if err := cp.setTrust(ctx, r.newPEM, false); err != nil {
		return fmt.Errorf("remove old CA: %w", err)
	}
	if err := cp.publishKubeletSignerTrust(ctx, r.newPEM); err != nil {
		return fmt.Errorf("remove old CA: %w", err)
	}
	return nil
}
