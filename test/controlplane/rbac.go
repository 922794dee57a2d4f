package controlplane

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Groups of bootstrap tokens created by CreateBootstrapToken.
const (
	// GroupAutoApprove is kubeadm's default node-token group, bound to
	// system:node-bootstrapper and to auto-approval of node client CSRs.
	GroupAutoApprove = "system:bootstrappers:kubeadm:default-node-token"
	// GroupManual may create CSRs (system:node-bootstrapper) but is not
	// auto-approved: its client CSRs stay Pending until approved.
	GroupManual = "system:bootstrappers:certagent:manual"
	// GroupNoRBAC has no bindings at all.
	GroupNoRBAC = "system:bootstrappers:certagent:norbac"
	// GroupNodes is the group of every node's client certificate.
	GroupNodes = "system:nodes"
)

// kubeadmBindings are the ClusterRoleBindings kubeadm creates for kubelet TLS
// bootstrap and client certificate rotation.
var kubeadmBindings = []struct{ name, role, group string }{
	{"kubeadm:kubelet-bootstrap", "system:node-bootstrapper", GroupAutoApprove},
	{"kubeadm:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", GroupAutoApprove},
	{"kubeadm:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", GroupNodes},
}

// manualBinding lets GroupManual create CSRs without auto-approval.
var manualBinding = struct{ name, role, group string }{
	"certagent:manual-node-bootstrapper", "system:node-bootstrapper", GroupManual,
}

// installKubeadmRBAC creates kubeadm's bootstrap ClusterRoleBindings and, as
// kubeadm does, the public kube-public/cluster-info ConfigMap that the
// bootstrapsigner controller signs for bootstrap tokens.
func (cp *ControlPlane) installKubeadmRBAC(ctx context.Context) error {
	for _, b := range kubeadmBindings {
		if err := cp.ensureGroupBinding(ctx, b.name, b.role, b.group); err != nil {
			return err
		}
	}
	return cp.installClusterInfo(ctx)
}

// ensureGroupBinding creates a ClusterRoleBinding of role to group unless it
// already exists.
func (cp *ControlPlane) ensureGroupBinding(ctx context.Context, name, role, group string) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: group}},
	}
	_, err := cp.Admin.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ClusterRoleBinding %s (%s -> %s): %w", name, group, role, err)
	}
	return nil
}

// installClusterInfo creates kube-public/cluster-info with a kubeconfig
// holding the server URL and CA, readable by system:anonymous, as kubeadm's
// bootstrap-token phase does.
func (cp *ControlPlane) installClusterInfo(ctx context.Context) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[""] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: cp.CACertPEM}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("serialize cluster-info kubeconfig: %w", err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: metav1.NamespacePublic},
		Data:       map[string]string{"kubeconfig": string(data)},
	}
	if _, err := cp.Admin.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create ConfigMap kube-public/cluster-info: %w", err)
	}
	const name = "kubeadm:bootstrap-signer-clusterinfo"
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespacePublic},
		Rules: []rbacv1.PolicyRule{{
			APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{"cluster-info"}, Verbs: []string{"get"},
		}},
	}
	if _, err := cp.Admin.RbacV1().Roles(metav1.NamespacePublic).Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create Role kube-public/%s: %w", name, err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespacePublic},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "system:anonymous"}},
	}
	if _, err := cp.Admin.RbacV1().RoleBindings(metav1.NamespacePublic).Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create RoleBinding kube-public/%s: %w", name, err)
	}
	return nil
}
