package node

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// container is a Debian system booted with systemd-nspawn. It shares the
// host's network, so it reaches the test control plane on 127.0.0.1.
type container struct {
	t     *testing.T
	name  string
	root  string // its root file system on the host
	nspwn *exec.Cmd
	pid   int // the container's systemd, as the host sees it
	log   string
}

// boot copies rootfs, lets prepare write into the copy, boots it and waits
// until systemd inside runs.
func boot(t *testing.T, rootfs, name string, prepare func(root string)) *container {
	t.Helper()
	dir := t.TempDir()
	c := &container{t: t, name: name, root: filepath.Join(dir, "root"), log: filepath.Join(dir, "nspawn.log")}
	start := time.Now()
	if out, err := exec.Command("cp", "-a", rootfs, c.root).CombinedOutput(); err != nil {
		t.Fatalf("copying the root file system: %v\n%s", err, out)
	}
	t.Logf("root file system copied in %s", time.Since(start).Round(time.Millisecond))
	prepare(c.root)
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	c.nspwn = exec.Command("systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--machine="+name, "-D", c.root, "--boot")
	c.nspwn.Stdout, c.nspwn.Stderr = logf, logf
	c.nspwn.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.nspwn.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	t.Cleanup(c.stop)
	// Wait for systemd to answer (state running or degraded). The container's
	// init is the child of systemd-nspawn that runs systemd (nspawn forks a
	// short-lived helper first, so look again each time).
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("systemd in the container did not come up in 90s\n%s", c.nspawnLog())
		}
		c.pid = childOf(c.nspwn.Process.Pid)
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.pid)); c.pid == 0 || strings.TrimSpace(string(comm)) != "systemd" {
			continue
		}
		out, _ := c.exec(10*time.Second, "systemctl", "is-system-running")
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			break
		}
	}
	t.Logf("container %s booted in %s (init pid %d)", name, time.Since(start).Round(time.Millisecond), c.pid)
	return c
}

func childOf(pid int) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

func (c *container) nspawnLog() string {
	data, _ := os.ReadFile(c.log)
	return tail(data, 4000)
}

// exec runs a command inside the container and returns its combined output.
func (c *container) exec(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid), "-a", "--"}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	// The timeout kills nsenter, not the command it forked inside the
	// container, which keeps the output open: stop waiting for it then.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// must runs a command inside the container and fails the test if it fails.
func (c *container) must(args ...string) string {
	c.t.Helper()
	out, err := c.exec(2*time.Minute, args...)
	if err != nil {
		c.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// file is the host path of a path inside the container.
func (c *container) file(p string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", c.pid), p)
}

// show returns a systemd unit property.
func (c *container) show(unit, prop string) string {
	c.t.Helper()
	return strings.TrimSpace(c.must("systemctl", "show", unit, "-p", prop, "--value"))
}

func (c *container) stop() {
	if c.nspwn == nil || c.nspwn.ProcessState != nil {
		return
	}
	if c.pid != 0 {
		_, _ = c.exec(20*time.Second, "systemctl", "poweroff")
	}
	done := make(chan struct{})
	go func() { _ = c.nspwn.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		if c.pid != 0 {
			_ = syscall.Kill(c.pid, syscall.SIGKILL) // ends the whole PID namespace
		}
		_ = syscall.Kill(-c.nspwn.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
