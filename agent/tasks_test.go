package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/rotate"
)

// TestClassify: how the renewal loop treats a step's error. A fault of the
// node itself (a full, over-quota, read-only or failing disk; no file
// descriptor left) is retried within a minute, not as a failure that needs
// a person, however it is wrapped (a bare errno looks transient to
// bootstrap.IsTransient: it must still be a NodeFault).
func TestClassify(t *testing.T) {
	write := func(errno syscall.Errno) error {
		return fmt.Errorf("storing: %w", &fs.PathError{Op: "write", Path: "/var/lib/kubelet/pki/.x.tmp-certagent-1", Err: errno})
	}
	for _, tc := range []struct {
		name string
		err  error
		want rotate.Class
	}{
		{"success", nil, rotate.Done},
		{"no credentials", fmt.Errorf("%w: no kubelet.conf", bootstrap.ErrNoCredentials), rotate.Blocked},
		{"kubelet.conf rejected", fmt.Errorf("%w: 401", bootstrap.ErrIdentityRejected), rotate.Blocked},
		{"disk full", write(syscall.ENOSPC), rotate.NodeFault},
		{"quota", write(syscall.EDQUOT), rotate.NodeFault},
		{"read-only", &os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EROFS}, rotate.NodeFault},
		{"I/O error", write(syscall.EIO), rotate.NodeFault},
		{"system out of files", write(syscall.ENFILE), rotate.NodeFault},
		{"certagent out of files", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}, rotate.NodeFault},
		{"bare errno", os.NewSyscallError("fsync", syscall.ENOSPC), rotate.NodeFault},
		{"permission denied", write(syscall.EACCES), rotate.NeedsPerson},
		{"API server unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, rotate.Transient},
		{"throttled", apierrors.NewTooManyRequests("slow down", 1), rotate.Transient},
		{"denied", &bootstrap.CSRError{Name: "n", Outcome: bootstrap.OutcomeDenied}, rotate.NeedsPerson},
		{"something else", errors.New("refusing the issued certificate"), rotate.NeedsPerson},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Fatalf("classify(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}
