// Package issuer turns an attested CSR into a kubelet client certificate
// through the Kubernetes CSR API: it posts the node's own CSR for the signer
// kubernetes.io/kube-apiserver-client-kubelet, approves it (reason
// AttestedByTPM), and waits for kube-controller-manager's csrsigning
// controller to sign it. It implements attestor.Issuer.
//
// Every request is idempotent: a CSR's name is derived from what it asks
// for, so a retry after a timeout or a restart of the service finds the CSR
// it made instead of making another, and adopts an existing one only if it
// asks for exactly the same (checkAdoptable).
//
// It must not judge the node: it is called only with a CSR that passed the
// attestor's checks. It must not approve anything it did not create or
// adopt for such a request.
package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.uber.org/zap"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	certinformers "k8s.io/client-go/informers/certificates/v1"
	"k8s.io/client-go/kubernetes"
	certclient "k8s.io/client-go/kubernetes/typed/certificates/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/certagent/certagent/cluster/attestor"
	"github.com/certagent/certagent/protocol/attestation"
)

// What the issuer writes on the CSRs it makes.
const (
	SignerName = certificatesv1.KubeAPIServerClientKubeletSignerName
	// ApprovalReason is the Approved condition's reason: the csrapproving
	// controller's own is AutoApproved.
	ApprovalReason = "AttestedByTPM"
	// ManagedByLabel=ManagedBy marks the CSRs the issuer makes; its
	// informer watches only those.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "certagent-cluster"
	// NodeAnnotation and EKHashAnnotation say which node and which TPM a
	// CSR was attested for.
	NodeAnnotation   = attestation.EnrollmentGroup + "/node"
	EKHashAnnotation = attestation.EnrollmentGroup + "/ek-public-key-hash"
	// NamePrefix starts every CSR name the issuer makes.
	NamePrefix = "tpm-"
)

// Config configures an Issuer; New checks it.
type Config struct {
	// Client creates, reads and approves CSRs. Required.
	Client kubernetes.Interface
	// CSRs is a shared informer over the CSRs the issuer makes
	// (NewCSRInformer). Issue waits on its cache for the signer's
	// certificate, so waiting costs the API server nothing per CSR.
	// Required; the caller runs it.
	CSRs cache.SharedIndexInformer
	// Timeout bounds one Issue, from creating the CSR to its certificate;
	// 20s if zero: under the node's 30 s call timeout, so the node hears a
	// retryable issue_failed (and its retry finds the same CSR) rather than
	// timing out.
	Timeout time.Duration
	// MaxExpiration caps the certificate lifetime a node may ask for, and
	// is asked for when the node asks none. Zero leaves the lifetime to the
	// node and the signer (--cluster-signing-duration). At least 10 minutes
	// if set: Kubernetes refuses shorter.
	MaxExpiration time.Duration
	// Logger is named "issuer" below it; zap.NewNop() if nil.
	Logger *zap.Logger
}

// Issuer implements attestor.Issuer with Kubernetes CSRs.
type Issuer struct {
	csrs    certclient.CertificateSigningRequestInterface
	waiter  *waiter
	timeout time.Duration
	max     time.Duration
	log     *zap.Logger
}

var _ attestor.Issuer = (*Issuer)(nil)

// NewCSRInformer returns a shared informer over the CSRs an Issuer makes
// (label ManagedByLabel=ManagedBy) and no others.
func NewCSRInformer(client kubernetes.Interface, resync time.Duration) cache.SharedIndexInformer {
	return certinformers.NewFilteredCertificateSigningRequestInformer(client, resync, cache.Indexers{},
		func(o *metav1.ListOptions) { o.LabelSelector = ManagedByLabel + "=" + ManagedBy })
}

// New checks cfg and returns an Issuer.
func New(cfg Config) (*Issuer, error) {
	if cfg.Client == nil || cfg.CSRs == nil {
		return nil, errors.New("issuer: Client and CSRs are required")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("issuer: Timeout %v is negative", cfg.Timeout)
	}
	minLifetime := attestation.MinExpirationSeconds * time.Second
	if cfg.MaxExpiration != 0 && (cfg.MaxExpiration < minLifetime || cfg.MaxExpiration.Seconds() > float64(1<<31-1)) {
		return nil, fmt.Errorf("issuer: MaxExpiration %v must be 0 or between %v and 2^31-1 seconds", cfg.MaxExpiration, minLifetime)
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	w, err := newWaiter(cfg.CSRs)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return &Issuer{
		csrs:    cfg.Client.CertificatesV1().CertificateSigningRequests(),
		waiter:  w,
		timeout: cfg.Timeout,
		max:     cfg.MaxExpiration,
		log:     cfg.Logger.Named("issuer"),
	}, nil
}

// Issue implements attestor.Issuer: create (or adopt) the CSR, approve it,
// wait for its certificate. Its errors say what failed and, for a missing
// permission, which RBAC rule the service lacks; they reach the operator's
// log and Events, never the node.
func (i *Issuer) Issue(ctx context.Context, req attestor.IssueRequest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, i.timeout)
	defer cancel()
	want := desired(req, i.max)
	log := i.log.With(zap.String("csr", want.Name), zap.String("node", req.NodeName), zap.String("ek_hash", req.EKHash))
	csr, err := i.createOrAdopt(ctx, want, log)
	if err != nil {
		return nil, err
	}
	if csr, err = i.approve(ctx, csr, want, req); err != nil {
		return nil, err
	}
	cert, err := i.waiter.wait(ctx, csr.Name, csr.UID)
	if err != nil {
		return nil, err
	}
	log.Info("certificate signed")
	return cert, nil
}

// desired is the CSR object Issue makes for req.
func desired(req attestor.IssueRequest, max time.Duration) *certificatesv1.CertificateSigningRequest {
	request := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.CSR.Raw})
	expiration := lifetime(req.ExpirationSeconds, max)
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			Name:   csrName(request, expiration),
			Labels: map[string]string{ManagedByLabel: ManagedBy},
			Annotations: map[string]string{
				NodeAnnotation:   req.NodeName,
				EKHashAnnotation: req.EKHash,
			},
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           request,
			SignerName:        SignerName,
			ExpirationSeconds: expiration,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth},
		},
	}
}

// csrName is derived from everything the CSR asks for (the request and the
// lifetime; signer and usages are fixed), so the same request always has
// the same name: NamePrefix and the hex SHA-256.
func csrName(request []byte, expiration *int32) string {
	h := sha256.New()
	h.Write(request)
	if expiration != nil {
		h.Write([]byte("\x00expirationSeconds=" + strconv.Itoa(int(*expiration))))
	}
	return NamePrefix + hex.EncodeToString(h.Sum(nil))
}

// lifetime is the expirationSeconds the CSR asks the signer for: what the
// node asked, capped at max; max if the node asked none; nil (the signer's
// default) if neither is set.
func lifetime(asked int32, max time.Duration) *int32 {
	maxSecs := int32(max / time.Second)
	switch {
	case asked == 0 && maxSecs == 0:
		return nil
	case asked == 0 || maxSecs != 0 && asked > maxSecs:
		return &maxSecs
	default:
		return &asked
	}
}
