package controlplane

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Reasons and messages of the conditions kubectl certificate approve|deny
// set.
const (
	approveReason  = "KubectlApprove"
	approveMessage = "This CSR was approved by kubectl certificate approve."
	denyReason     = "KubectlDeny"
	denyMessage    = "This CSR was denied by kubectl certificate deny."
)

// ApproveCSR approves the CSR name exactly as `kubectl certificate approve`
// does: it adds an Approved condition (Reason "KubectlApprove") through the
// approval subresource, does nothing if the CSR is already approved, and
// fails if it is denied.
func (cp *ControlPlane) ApproveCSR(ctx context.Context, name string) error {
	if err := cp.addCSRCondition(ctx, name, certificatesv1.CertificateDenied, certificatesv1.CertificateApproved, approveReason, approveMessage); err != nil {
		return fmt.Errorf("approve CSR %s: %w", name, err)
	}
	return nil
}

// DenyCSR denies the CSR name as `kubectl certificate deny` does: it adds a
// Denied condition through the approval subresource, does nothing if the CSR
// is already denied, and fails if it is approved. Empty reason and message
// default to kubectl's ("KubectlDeny", "This CSR was denied by kubectl
// certificate deny.").
func (cp *ControlPlane) DenyCSR(ctx context.Context, name, reason, message string) error {
	if reason == "" {
		reason = denyReason
	}
	if message == "" {
		message = denyMessage
	}
	if err := cp.addCSRCondition(ctx, name, certificatesv1.CertificateApproved, certificatesv1.CertificateDenied, reason, message); err != nil {
		return fmt.Errorf("deny CSR %s: %w", name, err)
	}
	return nil
}

// addCSRCondition mirrors kubectl's addConditionIfNeeded and its retry on
// conflict (up to 10 times).
func (cp *ControlPlane) addCSRCondition(ctx context.Context, name string, mustNotHave, add certificatesv1.RequestConditionType, reason, message string) error {
	csrs := cp.Admin.CertificatesV1().CertificateSigningRequests()
	for i := 0; ; i++ {
		csr, err := csrs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range csr.Status.Conditions {
			if c.Type == mustNotHave {
				return fmt.Errorf("certificate signing request %q is already %s", name, c.Type)
			}
			if c.Type == add {
				return nil
			}
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type:           add,
			Status:         corev1.ConditionTrue,
			Reason:         reason,
			Message:        message,
			LastUpdateTime: metav1.Now(),
		})
		_, err = csrs.UpdateApproval(ctx, name, csr, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && i < 10 {
			continue
		}
		return err
	}
}
