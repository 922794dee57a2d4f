package controlplane

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Before ClusterTrustBundle is GA (certificates.k8s.io/v1, 1.37) the trust a
// CA rotation publishes lives in kube-public's ConfigMaps, where certagent's
// trust source reads it (docs/ca-rotation.md, "Clusters and kubelets without
// what this needs"): the controller-manager's root-ca-cert-publisher keeps
// kube-root-ca.crt from its --root-ca-file (the API server's serving
// trust), and the operator writes certagent-trust for the kubelet signers.
const (
	publicNamespace = "kube-public"
	rootCAConfigMap = "kube-root-ca.crt"
	// TrustConfigMap is the ConfigMap an operator writes for the kubelet
	// signers' CAs on a cluster without ClusterTrustBundles.
	TrustConfigMap = "certagent-trust"
	// rootCAPublisher is the controller that keeps kube-root-ca.crt.
	rootCAPublisher = "root-ca-cert-publisher"
)

// trustConfigMapKeys are TrustConfigMap's keys for each kubelet signer.
var trustConfigMapKeys = map[string]string{
	certificatesv1.KubeAPIServerClientKubeletSignerName: "kube-apiserver-client-kubelet.crt",
	certificatesv1.KubeletServingSignerName:             "kubelet-serving.crt",
}

// TrustInConfigMaps reports whether the control plane's version publishes
// trust in kube-public's ConfigMaps instead of ClusterTrustBundles
// (before 1.37: the serving signer's publisher and certificates.k8s.io/v1
// are missing or behind gates).
func (cp *ControlPlane) TrustInConfigMaps() bool {
	parts := strings.SplitN(strings.TrimPrefix(cp.bins.Version, "v"), ".", 3)
	if len(parts) < 2 {
		return false
	}
	minor, err := strconv.Atoi(parts[1])
	return err == nil && parts[0] == "1" && minor < 37
}

// Version is the Kubernetes version of the control plane (v1.30.14).
func (cp *ControlPlane) Version() string { return cp.bins.Version }

// publishedInConfigMaps is PublishedCAs where trust lives in ConfigMaps.
func (cp *ControlPlane) publishedInConfigMaps(ctx context.Context, signer string) (string, error) {
	name, key := TrustConfigMap, trustConfigMapKeys[signer]
	if signer == ServingSigner {
		name, key = rootCAConfigMap, "ca.crt"
	}
	if key == "" {
		return "", fmt.Errorf("no ConfigMap publishes the trust of %s", signer)
	}
	cm, err := cp.Admin.CoreV1().ConfigMaps(publicNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading ConfigMap %s/%s: %w", publicNamespace, name, err)
	}
	return cm.Data[key], nil
}

// publishTrustConfigMap creates or updates, as cluster-admin, the
// certagent-trust ConfigMap with bundlePEM for each kubelet signer, as
// docs/ca-rotation.md's kubectl command does.
func (cp *ControlPlane) publishTrustConfigMap(ctx context.Context, bundlePEM []byte) error {
	cms := cp.Admin.CoreV1().ConfigMaps(publicNamespace)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: TrustConfigMap, Namespace: publicNamespace}, Data: map[string]string{}}
	for _, key := range trustConfigMapKeys {
		cm.Data[key] = string(bundlePEM)
	}
	_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("publishing ConfigMap %s/%s: %w", publicNamespace, TrustConfigMap, err)
	}
	return nil
}
