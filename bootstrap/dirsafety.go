package bootstrap

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.uber.org/zap"
)

// CheckDirSafe refuses a directory certagent would write in if another user
// could redirect or replace what it writes: any existing component of the
// path (or a symlink on the way) owned by a user other than root or us, a
// directory on the way that others can write to (unless it is sticky, like
// /tmp, and not the directory itself), or the directory itself writable by
// group or others. A root-owned symlink, such as /var/lib/kubelet moved to
// another disk, is fine. Missing components are fine: certagent creates them
// with safe modes.
func CheckDirSafe(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", dir, err)
	}
	return walkSafe(abs, abs, 0)
}

func walkSafe(original, path string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("refusing %s: too many symlinks", original)
	}
	euid := uint32(os.Geteuid())
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(path), "/"), "/")
	cur := "/"
	for i, part := range append([]string{""}, parts...) {
		if part != "" {
			cur = filepath.Join(cur, part)
		}
		last := i == len(parts)
		fi, err := os.Lstat(cur)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checking %s: %w", cur, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if st.Uid != 0 && st.Uid != euid {
			what := "directory"
			if fi.Mode()&fs.ModeSymlink != 0 {
				what = "symlink"
			}
			return fmt.Errorf("refusing to write under %s: %s is a %s owned by uid %d, who could redirect or replace certagent's files; make it owned by root", original, cur, what, st.Uid)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := os.Readlink(cur)
			if err != nil {
				return fmt.Errorf("reading symlink %s: %w", cur, err)
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(cur), target)
			}
			rest := filepath.Join(append([]string{target}, parts[i:]...)...)
			return walkSafe(original, rest, depth+1)
		}
		if !fi.IsDir() {
			return fmt.Errorf("refusing to write under %s: %s is not a directory", original, cur)
		}
		perm := fi.Mode().Perm()
		sticky := fi.Mode()&fs.ModeSticky != 0
		if perm&0o022 != 0 && (last || !sticky) {
			return fmt.Errorf("refusing to write under %s: %s is writable by other users (mode %04o), who could replace certagent's files; chmod go-w %s", original, cur, perm, cur)
		}
	}
	return nil
}

// warnIfReadable warns when the bootstrap kubeconfig can be read by others:
// its token lets anyone on the machine ask for this node's certificates.
func (b *Bootstrapper) warnIfReadable(path string) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o044 == 0 {
		return
	}
	b.log.Warn("the bootstrap kubeconfig is readable by other users; its token lets anyone on this machine request this node's certificates: chmod 0600 it",
		zap.String("path", path), zap.String("mode", fmt.Sprintf("%04o", fi.Mode().Perm())))
}
