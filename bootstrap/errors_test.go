package bootstrap

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

func TestErrorClassification(t *testing.T) {
	gr := schema.GroupResource{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	for _, tc := range []struct {
		name                  string
		err                   error
		transient, notApplied bool
	}{
		{"dial refused", fmt.Errorf("creating CSR: %w", dial), true, true},
		{"read reset", fmt.Errorf("creating CSR: %w", read), true, false},
		{"unauthorized", apierrors.NewUnauthorized("token expired"), false, true},
		{"forbidden", apierrors.NewForbidden(gr, "x", errors.New("no RBAC")), false, true},
		{"unknown authority", fmt.Errorf("post: %w", x509.UnknownAuthorityError{}), false, true},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 1), true, false},
		{"internal error", apierrors.NewInternalError(errors.New("etcd")), true, false},
		{"too many requests", apierrors.NewTooManyRequests("slow down", 1), true, false},
		{"denied", &CSRError{Name: "n", Outcome: OutcomeDenied}, false, false},
		{"deleted", &CSRError{Name: "n", Outcome: OutcomeDeleted}, true, false},
		{"read-only file system", fmt.Errorf("saving key: %w", &fs.PathError{Op: "open", Path: "/x", Err: syscall.EROFS}), false, false},
		{"disk full", fmt.Errorf("writing: %w", &fs.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), false, false},
		{"connection closed mid-response (EOF)", fmt.Errorf("post: %w", &url.Error{Op: "Post", URL: "https://x", Err: io.EOF}), true, false},
		{"unexpected EOF", fmt.Errorf("watch: %w", io.ErrUnexpectedEOF), true, false},
		{"EOF only in a message is not a network error", errors.New("parsing PEM: unexpected EOF in certificate block"), false, false},
		{"GOAWAY", fmt.Errorf("post: %w", http2.GoAwayError{ErrCode: http2.ErrCodeNo}), true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsTransient(tc.err); got != tc.transient {
				t.Errorf("IsTransient = %v, want %v", got, tc.transient)
			}
			if got := requestNotApplied(tc.err); got != tc.notApplied {
				t.Errorf("requestNotApplied = %v, want %v", got, tc.notApplied)
			}
		})
	}
}

// TestAdviceFitsTheCredential: the same refusal means different things for
// a bootstrap token and for the node's own certificate, and the message must
// say the one that fits (a 401 on renewal used to tell people to write a new
// bootstrap token into kubelet.conf; a 403 blamed bootstrap RBAC).
func TestAdviceFitsTheCredential(t *testing.T) {
	gr := schema.GroupResource{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}
	boot := Credential{Config: &rest.Config{Host: "https://api:6443"}, Path: "/etc/kubernetes/bootstrap-kubelet.conf", Bootstrap: true}
	node := Credential{Config: &rest.Config{Host: "https://api:6443"}, Path: "/etc/kubernetes/kubelet.conf"}
	const bootPath = "/etc/kubernetes/bootstrap-kubelet.conf"
	for _, tc := range []struct {
		name       string
		err        error
		cred       Credential
		want, bans []string
	}{
		{"401 bootstrap token", apierrors.NewUnauthorized("x"), boot,
			[]string{"rejected the credentials in /etc/kubernetes/bootstrap-kubelet.conf", "kubeadm token create"}, []string{"drop a bootstrap kubeconfig"}},
		{"401 node certificate", apierrors.NewUnauthorized("x"), node,
			[]string{"no longer accepts the client certificate in /etc/kubernetes/kubelet.conf", "drop a bootstrap kubeconfig at " + bootPath}, []string{"token"}},
		{"403 bootstrap token", apierrors.NewForbidden(gr, "", errors.New("no")), boot,
			[]string{"system:node-bootstrapper"}, []string{"Node authorizer"}},
		{"403 node certificate", apierrors.NewForbidden(gr, "", errors.New("no")), node,
			[]string{"Node authorizer", "--authorization-mode including Node"}, []string{"bootstrapper", "token"}},
		{"unknown CA, bootstrap", x509.UnknownAuthorityError{}, boot,
			[]string{"check its certificate-authority(-data)"}, []string{"rebuilt"}},
		{"unknown CA, node", x509.UnknownAuthorityError{}, node,
			[]string{"was the cluster rebuilt or its CA replaced?", "drop a bootstrap kubeconfig with the cluster's current CA at " + bootPath}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := explainAPIError(tc.err, "renewing", tc.cred, bootPath).Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			for _, b := range tc.bans {
				if strings.Contains(msg, b) {
					t.Errorf("%q says %q, which does not fit this credential", msg, b)
				}
			}
		})
	}
}

// TestKeyFate: the one place that decides whether a pending key survives an
// attempt.
func TestKeyFate(t *testing.T) {
	gr := schema.GroupResource{Group: "certificates.k8s.io", Resource: "certificatesigningrequests"}
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name          string
		err           error
		fresh, posted bool
		want          fate
	}{
		{"stored", nil, false, true, discardKey},
		{"denied", &CSRError{Outcome: OutcomeDenied}, false, true, discardKey},
		{"failed", &CSRError{Outcome: OutcomeFailed}, false, true, discardKey},
		{"deleted: the same name is posted again", &CSRError{Outcome: OutcomeDeleted}, false, true, keepKey},
		{"refused certificate", &refusedError{csr: "n", err: ErrIssuedExpired}, false, true, discardKey},
		{"not yet valid: waiting fixes it", &refusedError{csr: "n", err: fmt.Errorf("%w x", ErrNotYetValid)}, false, true, keepKey},
		{"name taken by another key", fmt.Errorf("CSR n %w: signed by another key", errNotOurs), false, false, discardKey},
		{"asks for old names", fmt.Errorf("CSR n: %w", errStaleRequest), false, false, discardKey},
		{"fresh key, create refused (403)", apierrors.NewForbidden(gr, "", errors.New("no")), true, false, discardKey},
		{"fresh key, never sent", dial, true, false, discardKey},
		// Found by the simulation: the create succeeded, then the wait failed
		// to connect; discarding the key posted a second CSR beside the first.
		{"fresh key, posted, then the API server went away", dial, true, true, keepKey},
		{"fresh key, posted, then 403 on the watch", apierrors.NewForbidden(gr, "", errors.New("no")), true, true, keepKey},
		{"old key, never sent: its CSR may exist from before", dial, false, false, keepKey},
		{"fresh key, timeout: the CSR may exist", apierrors.NewServerTimeout(gr, "create", 1), true, false, keepKey},
		{"cancelled wait", context.Canceled, false, true, keepKey},
		{"full disk while storing", &fs.PathError{Op: "write", Err: syscall.ENOSPC}, false, true, keepKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := keyFate(tc.err, tc.fresh, tc.posted); got != tc.want {
				t.Fatalf("keyFate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	if got := RetryAfter(apierrors.NewTooManyRequests("slow down", 7)); got != 7*time.Second {
		t.Fatalf("RetryAfter(429, 7) = %s", got)
	}
	if got := RetryAfter(errors.New("x")); got != 0 {
		t.Fatalf("RetryAfter(plain) = %s", got)
	}
}
