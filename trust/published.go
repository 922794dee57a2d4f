package trust

import (
	"crypto/x509"
	"fmt"
	"slices"
	"time"
)

// The signers whose published trust the node follows.
const (
	// SignerAPIServerServing: kube-controller-manager publishes the API
	// server's serving CAs (its --root-ca-file) for it.
	SignerAPIServerServing = "kubernetes.io/kube-apiserver-serving"
	// SignerKubeletClient and SignerKubeletServing: the operator publishes
	// the CAs the kubelet signers issue from, the newest last to start
	// (docs/ca-rotation.md).
	SignerKubeletClient  = "kubernetes.io/kube-apiserver-client-kubelet"
	SignerKubeletServing = "kubernetes.io/kubelet-serving"
)

// Published is one ClusterTrustBundle as the API server serves it.
type Published struct {
	Name, Signer, PEM string
}

// BySigner is the union of the bundles published for signer; ok is false
// when there is none. One that does not parse refuses them all: the node
// does not adopt part of what the cluster says.
func BySigner(all []Published, signer string) (b Bundle, ok bool, err error) {
	var parts []Bundle
	for _, p := range all {
		if p.Signer != signer {
			continue
		}
		part, err := ParseBundle([]byte(p.PEM))
		if err != nil {
			return Bundle{}, true, fmt.Errorf("ClusterTrustBundle %s: %w", p.Name, err)
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return Bundle{}, false, nil
	}
	return Merge(parts...), true, nil
}

// CheckServer refuses (ErrRefused) a bundle that would not verify the API
// server as it presents itself now: chain, leaf first, for serverName at
// now. Adopting such a bundle would cut the node off the cluster.
func CheckServer(b Bundle, chain []*x509.Certificate, serverName string, now time.Time) error {
	if len(chain) == 0 {
		return fmt.Errorf("the API server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: b.Pool(), Intermediates: inter, DNSName: serverName,
		CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("%w: it does not verify the API server the node talks to now (its certificate is issued by %q): %v",
			ErrRefused, chain[0].Issuer.CommonName, err)
	}
	return nil
}

// NeedsReissue reports whether leaf, issued by the signer whose published
// bundle is b, must be re-issued: it was not signed by the CA that signer
// issues from now, b's newest. issuing is that CA.
func NeedsReissue(leaf *x509.Certificate, b Bundle) (issuing *x509.Certificate, need bool) {
	issuing = b.Newest()
	if issuing == nil || leaf == nil {
		return issuing, false
	}
	return issuing, leaf.CheckSignatureFrom(issuing) != nil
}

// Signers lists the signers in all, sorted (for logs).
func Signers(all []Published) []string {
	var out []string
	for _, p := range all {
		out = append(out, p.Signer)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
