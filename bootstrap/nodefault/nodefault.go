// Package nodefault recognises a step that failed because of the node itself
// (node side): a file system full, over quota, read-only or failing, or no
// file descriptor left; it names the directory and says what to do. The
// daemon retries such a step within a minute instead of waiting for a
// person (package agent decides, package rotate times it).
//
// It classifies errors and does nothing else: no retry, no I/O.
package nodefault

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Fault is a step that failed because of the node itself, not the
// cluster or anyone's decision: a file system full, over quota, read-only or
// failing, or no file descriptor left. It clears without anyone telling
// certagent (an operator frees space, a log is rotated, a disk is remounted
// or comes back), so the daemon retries it within a minute instead of
// backing off as for a failure that needs a person. A failed write leaves the
// previous files as they were (atomic writes), and the pending key, once on
// disk, keeps its CSR: retrying makes no new request.
//
// The family, each decided on its own:
//   - ENOSPC, EDQUOT: space or quota runs out and comes back (a log rotated,
//     a cleanup, an operator): the canonical case.
//   - EROFS: the kernel remounts a file system read-only after errors, or a
//     person mounted it so; it takes a remount, after which certagent should
//     carry on at once.
//   - EIO: the device failed the request; on network and virtual disks (a
//     path failover, a storage hiccup) this passes, and on a dying disk no
//     back-off helps: either way a retry only re-tries a write.
//   - ENFILE, EMFILE: the system's or certagent's file descriptors are used
//     up; other processes (or certagent's own connections) release them.
//
// Not in it: EACCES and EPERM (permissions, an immutable file, a security
// policy: someone decided, and a person must decide again), ENOENT (a
// missing file or directory is a configuration matter).
type Fault struct {
	Errno syscall.Errno
	// Dir is the directory the failing operation was in; "" if unknown.
	Dir string
}

// nodeFaultErrnos are the errors of the family, in NodeFault's order.
var nodeFaultErrnos = []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EIO, syscall.ENFILE, syscall.EMFILE}

// Of reports whether err is a Fault, and which.
func Of(err error) (Fault, bool) {
	if err == nil {
		return Fault{}, false
	}
	var f Fault
	for _, e := range nodeFaultErrnos {
		if errors.Is(err, e) {
			f.Errno = e
			break
		}
	}
	if f.Errno == 0 {
		return Fault{}, false
	}
	var pathErr *fs.PathError
	var linkErr *os.LinkError
	switch {
	case errors.As(err, &linkErr):
		f.Dir = dirOf(linkErr.New)
	case errors.As(err, &pathErr):
		f.Dir = dirOf(pathErr.Path)
	}
	return f, true
}

// dirOf is path if it is a directory (a directory's fsync failed), else the
// directory it is in.
func dirOf(path string) string {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return filepath.Clean(path)
	}
	return filepath.Dir(path)
}

// String says what the node lacks, e.g. "no space left on /var/lib/kubelet/pki".
func (f Fault) String() string {
	where := f.Dir
	if where == "" {
		where = "the disk"
	}
	switch f.Errno {
	case syscall.ENOSPC:
		return "no space left on " + where
	case syscall.EDQUOT:
		return "disk quota exceeded on " + where
	case syscall.EROFS:
		return where + " is on a read-only file system"
	case syscall.EIO:
		return "I/O error on " + where
	case syscall.ENFILE:
		return "the system has used up its open-file table"
	case syscall.EMFILE:
		return "certagent has used up its open-file limit"
	}
	return fmt.Sprintf("%v on %s", f.Errno, where)
}

// Advice says what a person can do to end it sooner.
func (f Fault) Advice() string {
	switch f.Errno {
	case syscall.ENOSPC:
		return "free some space there"
	case syscall.EDQUOT:
		return "free some space there or raise root's quota"
	case syscall.EROFS:
		return "remount it read-write (dmesg says why it went read-only)"
	case syscall.EIO:
		return "check the disk (dmesg)"
	case syscall.ENFILE:
		return "raise fs.file-max or stop what holds the files"
	case syscall.EMFILE:
		return "raise LimitNOFILE of certagent.service"
	}
	return "check the node"
}
