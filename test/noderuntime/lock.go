package noderuntime

import (
	"fmt"
	"os"
	"syscall"
)

// hostLock is held from Start to Close: every test containerd uses the one
// bridge (Bridge, Subnet) and Close removes it, and every test kubelet the
// one cgroupfs hierarchy (kubepods); with two suites running a kubelet at
// once (go test runs packages in parallel: test/e2e, test/approver,
// test/carotation), kubectl exec to one's pod failed with "container not
// found" for 30 s on end. The kernel releases the flock if a test process dies.
const hostLock = "/run/lock/certagent-noderuntime.lock"

// lockHost waits for the lock file path (hostLock) and returns the open
// file holding it; closing the file releases it.
func lockHost(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return f, nil
}
