package nodefault

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// TestNodeFaultOf: which failures are the node's own (retried within a
// minute by the daemon) and what they say; the errors are wrapped the way
// the writes wrap them.
func TestNodeFaultOf(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, ".kubelet-client-2026.pem.tmp-certagent-123")
	// A real ENOSPC from the kernel: every write to /dev/full fails with it
	// (opened without O_CREATE: where it is missing, nothing is created).
	devFull := writeDevFull(t)
	for _, tc := range []struct {
		name   string
		err    error
		fault  bool
		text   string // String()
		advice string
	}{
		{"a real write to /dev/full", devFull, true, "no space left on /dev", "free some space there"},
		{"write of a temporary file: its directory", fmt.Errorf("storing: writing %s: %w", tmp, &fs.PathError{Op: "write", Path: tmp, Err: syscall.ENOSPC}), true,
			"no space left on " + dir, "free some space there"},
		{"fsync of the directory itself", &fs.PathError{Op: "sync", Path: dir, Err: syscall.EIO}, true, "I/O error on " + dir, "check the disk (dmesg)"},
		{"rename: the target's directory", &os.LinkError{Op: "rename", Old: tmp, New: filepath.Join(dir, "sub", "kubelet.conf"), Err: syscall.EROFS}, true,
			filepath.Join(dir, "sub") + " is on a read-only file system", "remount it read-write (dmesg says why it went read-only)"},
		{"quota", &fs.PathError{Op: "write", Path: tmp, Err: syscall.EDQUOT}, true, "disk quota exceeded on " + dir, "free some space there or raise root's quota"},
		{"the system's open files", &fs.PathError{Op: "open", Path: tmp, Err: syscall.ENFILE}, true, "the system has used up its open-file table", "raise fs.file-max or stop what holds the files"},
		{"certagent's open files, dialing", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}, true,
			"certagent has used up its open-file limit", "raise LimitNOFILE of certagent.service"},
		{"no path known", os.NewSyscallError("fsync", syscall.ENOSPC), true, "no space left on the disk", "free some space there"},
		{"permission denied: a person decided", &fs.PathError{Op: "open", Path: tmp, Err: syscall.EACCES}, false, "", ""},
		{"not permitted (an immutable file)", &fs.PathError{Op: "open", Path: tmp, Err: syscall.EPERM}, false, "", ""},
		{"missing", &fs.PathError{Op: "open", Path: tmp, Err: syscall.ENOENT}, false, "", ""},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false, "", ""},
		{"rejected", apierrors.NewUnauthorized("no"), false, "", ""},
		{"nil", nil, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "a real write to /dev/full" && devFull == nil {
				t.Skip("no /dev/full here")
			}
			f, ok := Of(tc.err)
			if ok != tc.fault {
				t.Fatalf("Of(%v) = %v, want %v", tc.err, ok, tc.fault)
			}
			if !ok {
				return
			}
			if f.String() != tc.text || f.Advice() != tc.advice {
				t.Fatalf("%q; %q\nwant %q; %q", f.String(), f.Advice(), tc.text, tc.advice)
			}
		})
	}
}

// writeDevFull writes to the kernel's full device and returns the write's
// error (ENOSPC); nil where there is no such device.
func writeDevFull(t *testing.T) error {
	t.Helper()
	fi, err := os.Stat("/dev/full")
	if err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		t.Logf("no /dev/full device: %v", err)
		return nil
	}
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Logf("opening /dev/full: %v", err)
		return nil
	}
	defer f.Close()
	_, err = f.Write([]byte("x"))
	return err
}
