package approver

import (
	"fmt"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	certinformers "k8s.io/client-go/informers/certificates/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// addressIndex indexes Nodes by their InternalIP and ExternalIP addresses.
const addressIndex = "address"

// NewNodeInformer returns a shared informer over the Nodes, indexed by
// address so "which Nodes report this IP" is a look-up.
func NewNodeInformer(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
	return coreinformers.NewNodeInformer(client, resync, cache.Indexers{addressIndex: func(obj any) ([]string, error) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return nil, nil
		}
		return IPAddresses(n), nil
	}})
}

// NewCSRInformer returns a shared informer over the kubelet serving CSRs
// only (a field selector on spec.signerName: the API server sends no other).
func NewCSRInformer(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
	return certinformers.NewFilteredCertificateSigningRequestInformer(client, resync, cache.Indexers{},
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.signerName", SignerName).String()
		})
}

// nodeCache implements Nodes over the Node informer's indexer.
type nodeCache struct{ indexer cache.Indexer }

func (c nodeCache) Node(name string) *corev1.Node {
	obj, ok, err := c.indexer.GetByKey(name)
	if err != nil || !ok {
		return nil
	}
	n, _ := obj.(*corev1.Node)
	return n
}

func (c nodeCache) WithAddress(ip string) []string {
	objs, err := c.indexer.ByIndex(addressIndex, ip)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		if n, ok := o.(*corev1.Node); ok {
			out = append(out, n.Name)
		}
	}
	return out
}

// pending: neither approved, denied nor failed.
func pending(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, certificatesv1.CertificateFailed:
			return false
		}
	}
	return true
}

// addressesChanged: what the policy reads of a Node changed.
func addressesChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(*corev1.Node)
	n, ok2 := newObj.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return fmt.Sprint(o.Status.Addresses) != fmt.Sprint(n.Status.Addresses)
}
