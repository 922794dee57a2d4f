package controlplane

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// TokenOptions selects what a bootstrap token created by
// CreateBootstrapToken may do.
type TokenOptions struct {
	// AutoApprove: the token's extra group is
	// system:bootstrappers:kubeadm:default-node-token (GroupAutoApprove),
	// the one bound to auto-approval. When false, the extra group is
	// system:bootstrappers:certagent:manual (GroupManual), which
	// CreateBootstrapToken binds (idempotently) only to
	// system:node-bootstrapper, so client CSRs from it stay Pending until
	// approved through the API.
	AutoApprove bool
	// NoRBAC: extra group system:bootstrappers:certagent:norbac
	// (GroupNoRBAC) with no bindings at all (for missing-RBAC tests).
	// It cannot be combined with AutoApprove.
	NoRBAC bool
	// Expiration is when the token expires; zero means never.
	Expiration time.Time
}

// group returns the token's extra group.
func (o TokenOptions) group() (string, error) {
	switch {
	case o.AutoApprove && o.NoRBAC:
		return "", fmt.Errorf("TokenOptions: AutoApprove and NoRBAC are mutually exclusive")
	case o.AutoApprove:
		return GroupAutoApprove, nil
	case o.NoRBAC:
		return GroupNoRBAC, nil
	default:
		return GroupManual, nil
	}
}

// CreateBootstrapToken creates a bootstrap token Secret
// kube-system/bootstrap-token-<id> (type bootstrap.kubernetes.io/token,
// random id [a-z0-9]{6} and secret [a-z0-9]{16}, usable for authentication
// and for signing kube-public/cluster-info, with the extra group chosen by o
// and the expiration if set) and returns the bearer token "<id>.<secret>",
// which authenticates as system:bootstrap:<id>.
func (cp *ControlPlane) CreateBootstrapToken(ctx context.Context, o TokenOptions) (string, error) {
	group, err := o.group()
	if err != nil {
		return "", err
	}
	if group == GroupManual {
		b := manualBinding
		if err := cp.ensureGroupBinding(ctx, b.name, b.role, b.group); err != nil {
			return "", fmt.Errorf("create bootstrap token: %w", err)
		}
	}
	token, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return "", fmt.Errorf("generate bootstrap token: %w", err)
	}
	id, secret, _ := strings.Cut(token, ".")
	data := map[string]string{
		bootstrapapi.BootstrapTokenIDKey:               id,
		bootstrapapi.BootstrapTokenSecretKey:           secret,
		bootstrapapi.BootstrapTokenDescriptionKey:      "certagent test token",
		bootstrapapi.BootstrapTokenUsageAuthentication: "true",
		bootstrapapi.BootstrapTokenUsageSigningKey:     "true",
		bootstrapapi.BootstrapTokenExtraGroupsKey:      group,
	}
	if !o.Expiration.IsZero() {
		data[bootstrapapi.BootstrapTokenExpirationKey] = o.Expiration.UTC().Format(time.RFC3339)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(id), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: data,
	}
	if _, err := cp.Admin.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("create bootstrap token secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return token, nil
}
