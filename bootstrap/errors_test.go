package bootstrap

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
