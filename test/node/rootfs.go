// Package node boots a real Debian bookworm with systemd in systemd-nspawn,
// seeds cloud-init with certagent's example user-data and checks the
// installed package on it (see node_test.go). Root only.
package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// rootfsVersion changes whenever what ensureRootfs installs changes.
const rootfsVersion = "bookworm-v2"

// ensureRootfs returns a cached Debian bookworm root file system with
// systemd, cloud-init and ssh-keygen (cloud-init's ssh module needs it),
// building it once with debootstrap (about a minute) under the test cache.
func ensureRootfs(ctx context.Context, cacheRoot string, logf func(string, ...any)) (string, error) {
	dir := filepath.Join(cacheRoot, "rootfs-"+rootfsVersion)
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "cloud-init")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheRoot, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cacheRoot, "rootfs.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "usr", "bin", "cloud-init")); err == nil {
		return dir, nil // built by another process meanwhile
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	logf("building the Debian bookworm root file system with debootstrap (first run only, about a minute)")
	steps := [][]string{
		{"debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus", "bookworm", tmp, "http://deb.debian.org/debian"},
		// cloud-init through debootstrap's --include fails on virtual packages: install it inside.
		// rpm: the rpm package is installed with its scriptlets too (TestRPMOnSystemd).
		{"chroot", tmp, "apt-get", "install", "-y", "--no-install-recommends", "cloud-init", "openssh-client", "procps", "rpm"},
		{"chroot", tmp, "apt-get", "clean"},
	}
	for _, s := range steps {
		cmd := exec.CommandContext(ctx, s[0], s[1:]...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", strings.Join(s, " "), err, tail(out, 3000))
		}
	}
	// Only NoCloud, and no network wait: the container shares the host's network.
	if err := os.WriteFile(filepath.Join(tmp, "etc/cloud/cloud.cfg.d/90-certagent-test.cfg"),
		[]byte("datasource_list: [NoCloud, None]\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
