package bootstrap

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/certagent/certagent/protocol/attestation"
	"golang.org/x/net/http2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Outcome is how a CSR ended without a certificate.
type Outcome string

const (
	OutcomeDenied  Outcome = "denied"
	OutcomeFailed  Outcome = "failed"
	OutcomeDeleted Outcome = "deleted"
)

// CSRError reports a CSR that will never be issued.
type CSRError struct {
	Name    string
	Outcome Outcome
	Reason  string // the condition's reason
	Message string // the condition's message
	By      string // the field manager that set the condition, when known
}

func (e *CSRError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CSR %s was %s", e.Name, e.Outcome)
	if e.By != "" {
		fmt.Fprintf(&b, " by %s", e.By)
	}
	if e.Reason != "" || e.Message != "" {
		fmt.Fprintf(&b, " (reason %q: %s)", e.Reason, e.Message)
	}
	switch e.Outcome {
	case OutcomeDenied:
		b.WriteString("; certagent discards its key and posts a new request on the next attempt: fix what the approver objected to (kubectl get csr " + e.Name + " -o yaml), then approve the new request with kubectl certificate approve <name>")
	case OutcomeFailed:
		b.WriteString("; the signer could not issue it: check kube-controller-manager's --cluster-signing-* flags and its log; certagent posts a new request on the next attempt")
	case OutcomeDeleted:
		b.WriteString(" while certagent was waiting for it; certagent posts it again on the next attempt")
	}
	return b.String()
}

// ErrNoCredentials means there is neither a usable kubelet.conf nor a bootstrap kubeconfig.
var ErrNoCredentials = errors.New("no credentials")

// IsTransient reports whether err is worth retrying unchanged: the API server
// unreachable, overloaded or restarting, or a CSR deleted under us.
// Rejected credentials, missing permissions, TLS trust failures and bad files
// are not: they need a person; nor are faults of the node's own disk or file
// descriptors (nodefault.Of).
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var csrErr *CSRError
	if errors.As(err, &csrErr) {
		return csrErr.Outcome == OutcomeDeleted
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var refusal *attestation.Error
	if errors.As(err, &refusal) {
		return refusal.Reason.Retryable() // the service restarting, busy, a stale nonce
	}
	// Local files are not: a full, read-only or failing disk is a NodeFault
	// (retried on a schedule of its own), permissions need a person. Checked
	// first because syscall.Errno also looks like a net.Error.
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	if errors.As(err, &pathErr) || errors.As(err, &linkErr) {
		return false
	}
	if rejectsCredential(err) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
		return false
	}
	if apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var netErr net.Error
	var opErr *net.OpError
	var goAway http2.GoAwayError
	return errors.As(err, &netErr) || errors.As(err, &opErr) || errors.As(err, &goAway) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// RetryAfter is the wait the API server asked for with err (a 429 or 5xx
// with Retry-After), 0 if none.
func RetryAfter(err error) time.Duration {
	if s, ok := apierrors.SuggestsClientDelay(err); ok && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// explainAPIError turns an API or transport error into one a person can act
// on. The advice fits the credential: a bootstrap token is fixed with a new
// token and bootstrap RBAC, the node's own certificate with a new bootstrap
// kubeconfig or the Node authorizer.
func explainAPIError(err error, action string, cred Credential, bootstrapPath string) error {
	server := cred.Config.Host
	var ua x509.UnknownAuthorityError
	var csrErr *CSRError
	switch {
	case errors.As(err, &csrErr):
		return fmt.Errorf("%s: %w", action, err)
	case (errors.As(err, &ua) || strings.Contains(err.Error(), "certificate signed by unknown authority")) && cred.Bootstrap:
		return fmt.Errorf("%s: the API server %s presented a certificate not signed by the CA in %s; check its certificate-authority(-data): %w", action, server, cred.Path, err)
	case errors.As(err, &ua) || strings.Contains(err.Error(), "certificate signed by unknown authority"):
		return fmt.Errorf("%s: the API server %s presented a certificate not signed by the CA in %s (was the cluster rebuilt or its CA replaced?); drop a bootstrap kubeconfig with the cluster's current CA at %s and certagent bootstraps again: %w", action, server, cred.Path, bootstrapPath, err)
	case apierrors.IsUnauthorized(err) && cred.Bootstrap:
		return fmt.Errorf("%s: the API server %s rejected the credentials in %s (401 Unauthorized): the token is unknown, expired or malformed; create a new bootstrap token (kubeadm token create) and write it to that file: %w", action, server, cred.Path, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: the API server %s no longer accepts the client certificate in %s (401 Unauthorized: was the cluster rebuilt or its CA replaced?); drop a bootstrap kubeconfig at %s and certagent bootstraps again: %w", action, server, cred.Path, bootstrapPath, err)
	case apierrors.IsForbidden(err) && cred.Bootstrap:
		return fmt.Errorf("%s: forbidden for the credentials in %s (403): the bootstrap token's group needs the ClusterRole system:node-bootstrapper (kubeadm binds it as ClusterRoleBinding kubeadm:kubelet-bootstrap); the server said: %w", action, cred.Path, err)
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: forbidden for the node's credentials in %s (403): a node creates and reads its CSRs through the Node authorizer: check that the API server runs with --authorization-mode including Node; the server said: %w", action, cred.Path, err)
	}
	return fmt.Errorf("%s: %w", action, err)
}

// requestNotApplied reports whether err proves that a create request never
// took effect: it was never sent (no connection, TLS refused) or the server
// rejected it. A timeout or a lost response proves nothing: the CSR may exist,
// so its key must be kept to find it again.
func requestNotApplied(err error) bool {
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) {
		return true
	}
	return apierrors.IsUnauthorized(err) || apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)
}
