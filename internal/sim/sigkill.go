//go:build failpoints

package sim

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// unlockKilled does for a killed agent what the kernel does for a process
// a SIGKILL ends: its flock on the certificate directory's lock goes with
// it. An agent whose Run cannot return (a goroutine frozen at a failpoint
// holds it) still has the lock file open in this process; without this the
// next start would wait for a dead process forever, which no node sees.
// Called between the kill and the next start, so every open descriptor of
// the lock file is the dead agent's. The descriptors stay open (Run closes
// them if it ever returns); only the lock is dropped.
func (w *World) unlockKilled() {
	lock, err := filepath.EvalSymlinks(filepath.Join(w.cfg.CertDir, ".certagent.lock"))
	if err != nil {
		return // never created
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		w.fail("reading /proc/self/fd to release a killed agent's lock: %v", err)
		return
	}
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == lock {
			if err := syscall.Flock(fd, syscall.LOCK_UN); err != nil {
				w.fail("releasing a killed agent's lock %s (fd %d): %v", lock, fd, err)
			}
		}
	}
}
