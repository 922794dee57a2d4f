package controlplane

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// Signers whose trust a CA rotation publishes as ClusterTrustBundles.
const (
	// ServingSigner is the API server's serving signer, whose bundle the
	// controller-manager publishes from its --root-ca-file.
	ServingSigner = "kubernetes.io/kube-apiserver-serving"
	// KubeletSignerBundleSuffix ends the names of the bundles SwitchSigners
	// and RemoveOldCA publish for the kubelet signers:
	// kubernetes.io:kube-apiserver-client-kubelet:cluster-ca.
	KubeletSignerBundleSuffix = "cluster-ca"
	// servingTrustPublisher is the controller that publishes ServingSigner's
	// bundle.
	servingTrustPublisher = "kube-apiserver-serving-clustertrustbundle-publisher-controller"
	// publishTimeout bounds waiting for a published bundle to change.
	publishTimeout = 2 * time.Minute
)

// KubeletSigners are the signers of kubelet certificates, which the cluster
// CA serves through the controller-manager.
var KubeletSigners = []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName}

// KubeletSignerBundleName is the ClusterTrustBundle an operator publishes
// for a kubelet signer: the signer with "/" as ":", then ":cluster-ca".
func KubeletSignerBundleName(signer string) string {
	return strings.ReplaceAll(signer, "/", ":") + ":" + KubeletSignerBundleSuffix
}

// PublishedCAs are the certificates of every ClusterTrustBundle of signer
// (before 1.37: of the kube-public ConfigMap that publishes its trust).
func (cp *ControlPlane) PublishedCAs(ctx context.Context, signer string) ([]*x509.Certificate, error) {
	if cp.TrustInConfigMaps() {
		bundle, err := cp.publishedInConfigMaps(ctx, signer)
		if err != nil {
			return nil, err
		}
		return ParseCerts([]byte(bundle))
	}
	list, err := cp.Admin.CertificatesV1().ClusterTrustBundles().List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.signerName", signer).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("listing ClusterTrustBundles of %s: %w", signer, err)
	}
	var out []*x509.Certificate
	for _, ctb := range list.Items {
		certs, err := ParseCerts([]byte(ctb.Spec.TrustBundle))
		if err != nil {
			return nil, fmt.Errorf("ClusterTrustBundle %s: %w", ctb.Name, err)
		}
		out = append(out, certs...)
	}
	return out, nil
}

// ParseCerts parses every CERTIFICATE block of a PEM bundle.
func ParseCerts(bundle []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for block, rest := pem.Decode(bundle); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// SameCAs reports whether got holds exactly the certificates of wantPEM, in
// any order.
func SameCAs(got []*x509.Certificate, wantPEM []byte) bool {
	want, err := ParseCerts(wantPEM)
	if err != nil || len(want) != len(got) {
		return false
	}
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g *x509.Certificate) bool { return bytes.Equal(g.Raw, w.Raw) }) {
			return false
		}
	}
	return true
}

// WaitPublished waits until signer's published bundles hold exactly
// bundlePEM's certificates.
func (cp *ControlPlane) WaitPublished(ctx context.Context, signer string, bundlePEM []byte) error {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for {
		got, err := cp.PublishedCAs(ctx, signer)
		if err == nil && SameCAs(got, bundlePEM) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the published trust of %s to hold the bundle (has %d CAs, %v): %w", signer, len(got), err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// publishKubeletSignerTrust creates or updates, as cluster-admin, the
// ClusterTrustBundle of each kubelet signer with bundlePEM (before 1.37:
// the certagent-trust ConfigMap).
func (cp *ControlPlane) publishKubeletSignerTrust(ctx context.Context, bundlePEM []byte) error {
	if cp.TrustInConfigMaps() {
		return cp.publishTrustConfigMap(ctx, bundlePEM)
	}
	ctbs := cp.Admin.CertificatesV1().ClusterTrustBundles()
	for _, signer := range KubeletSigners {
		ctb := &certificatesv1.ClusterTrustBundle{
			ObjectMeta: metav1.ObjectMeta{Name: KubeletSignerBundleName(signer)},
			Spec:       certificatesv1.ClusterTrustBundleSpec{SignerName: signer, TrustBundle: string(bundlePEM)},
		}
		_, err := ctbs.Create(ctx, ctb, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var cur *certificatesv1.ClusterTrustBundle
			if cur, err = ctbs.Get(ctx, ctb.Name, metav1.GetOptions{}); err == nil {
				cur.Spec.TrustBundle = ctb.Spec.TrustBundle
				_, err = ctbs.Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			return fmt.Errorf("publishing ClusterTrustBundle %s: %w", ctb.Name, err)
		}
	}
	return nil
}
