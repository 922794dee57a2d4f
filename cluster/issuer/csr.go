package issuer

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"go.uber.org/zap"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/cluster/attestor"
)

// The permissions each call needs, as packaging/cluster/20-rbac.yaml grants
// them, for the error a refused call returns.
const (
	needCreate  = "create on certificates.k8s.io certificatesigningrequests"
	needGet     = "get on certificates.k8s.io certificatesigningrequests"
	needApprove = "update on certificates.k8s.io certificatesigningrequests/approval and approve on certificates.k8s.io signers " + SignerName
)

// withRBACHint says which permission a forbidden call lacked.
func withRBACHint(err error, need string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w; missing RBAC: the service account needs %s (packaging/cluster/20-rbac.yaml grants it)", err, need)
	}
	return err
}

// createOrAdopt creates want, or, if a CSR of its name exists (a retry of
// the same request), returns that one if checkAdoptable allows.
func (i *Issuer) createOrAdopt(ctx context.Context, want *certificatesv1.CertificateSigningRequest, log *zap.Logger) (*certificatesv1.CertificateSigningRequest, error) {
	created, err := i.csrs.Create(ctx, want, metav1.CreateOptions{})
	if err == nil {
		log.Info("CSR created")
		return created, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, withRBACHint(fmt.Errorf("creating CertificateSigningRequest %s: %w", want.Name, err), needCreate)
	}
	existing, err := i.csrs.Get(ctx, want.Name, metav1.GetOptions{})
	if err != nil {
		return nil, withRBACHint(fmt.Errorf("reading the existing CertificateSigningRequest %s: %w", want.Name, err), needGet)
	}
	if err := checkAdoptable(existing, want); err != nil {
		return nil, err
	}
	log.Info("CSR exists for this request; using it")
	return existing, nil
}

// checkAdoptable: an existing CSR may stand for the one Issue would create
// only if it asks for exactly the same (request bytes, signer, usages,
// lifetime), so approving it approves nothing the attestation did not
// cover; and only if nobody denied it or its signing failed.
func checkAdoptable(existing, want *certificatesv1.CertificateSigningRequest) error {
	e, w := existing.Spec, want.Spec
	sameLifetime := (e.ExpirationSeconds == nil) == (w.ExpirationSeconds == nil) &&
		(e.ExpirationSeconds == nil || *e.ExpirationSeconds == *w.ExpirationSeconds)
	if !bytes.Equal(e.Request, w.Request) || e.SignerName != w.SignerName ||
		!slices.Equal(e.Usages, w.Usages) || !sameLifetime {
		return fmt.Errorf("CertificateSigningRequest %s exists but asks for something else than this node's request (requested by %q); not adopting it: delete it if it is not the service's (kubectl delete csr %s)",
			existing.Name, e.Username, existing.Name)
	}
	if c, ok := condition(existing, certificatesv1.CertificateDenied); ok {
		return fmt.Errorf("CertificateSigningRequest %s for this request was denied (reason %q: %s); the node's next request with a new key makes a new CSR, or delete this one (kubectl delete csr %s)",
			existing.Name, c.Reason, c.Message, existing.Name)
	}
	if c, ok := condition(existing, certificatesv1.CertificateFailed); ok {
		return fmt.Errorf("signing CertificateSigningRequest %s failed (reason %q: %s); delete it (kubectl delete csr %s) and check kube-controller-manager's csrsigning",
			existing.Name, c.Reason, c.Message, existing.Name)
	}
	return nil
}

// condition returns csr's condition of type t, if it has one that is true.
func condition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) (certificatesv1.CertificateSigningRequestCondition, bool) {
	for _, c := range csr.Status.Conditions {
		if c.Type == t && c.Status != corev1.ConditionFalse {
			return c, true
		}
	}
	return certificatesv1.CertificateSigningRequestCondition{}, false
}

// approve adds the Approved condition (reason ApprovalReason, the EK hash
// and node in its message) unless csr already has it. On a conflict it
// reads the CSR again, checks it is still adoptable, and tries again.
func (i *Issuer) approve(ctx context.Context, csr, want *certificatesv1.CertificateSigningRequest, req attestor.IssueRequest) (*certificatesv1.CertificateSigningRequest, error) {
	for attempt := 1; ; attempt++ {
		if _, ok := condition(csr, certificatesv1.CertificateApproved); ok {
			return csr, nil
		}
		c := csr.DeepCopy()
		c.Status.Conditions = append(c.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type:    certificatesv1.CertificateApproved,
			Status:  corev1.ConditionTrue,
			Reason:  ApprovalReason,
			Message: fmt.Sprintf("The TPM with EK %s proved it is the one enrolled for node %s (certagent-cluster).", req.EKHash, req.NodeName),
		})
		approved, err := i.csrs.UpdateApproval(ctx, c.Name, c, metav1.UpdateOptions{})
		if err == nil {
			i.log.Info("CSR approved", zap.String("csr", c.Name), zap.String("node", req.NodeName), zap.String("ek_hash", req.EKHash))
			return approved, nil
		}
		if !apierrors.IsConflict(err) || attempt == 3 {
			return nil, withRBACHint(fmt.Errorf("approving CertificateSigningRequest %s: %w", c.Name, err), needApprove)
		}
		if csr, err = i.csrs.Get(ctx, c.Name, metav1.GetOptions{}); err != nil {
			return nil, withRBACHint(fmt.Errorf("reading CertificateSigningRequest %s again after a conflict: %w", c.Name, err), needGet)
		}
		if err := checkAdoptable(csr, want); err != nil {
			return nil, err
		}
	}
}
