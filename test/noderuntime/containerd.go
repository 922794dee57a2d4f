package noderuntime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

// CNIBinDir is where Debian's containernetworking-plugins installs the
// plugins.
const CNIBinDir = "/usr/lib/cni"

// Bridge is the Linux bridge the test network creates (and Close removes);
// Subnet is its pod address range.
const (
	Bridge = "certagent0"
	Subnet = "10.244.231.0/24"
)

// Containerd is a running containerd of the test's own.
type Containerd struct {
	// Endpoint is the CRI endpoint for the kubelet's
	// containerRuntimeEndpoint, unix://<dir>/containerd.sock.
	Endpoint string
	// Log is containerd's log file.
	Log string

	dir, socket string
	cmd         *exec.Cmd
	exited      chan struct{}
	lock        *os.File // hostLock, released by Close
}

// Check says what is missing for Start on this machine: root, containerd,
// runc, ctr and the CNI plugins the test network uses.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("a container runtime needs root")
	}
	var missing []string
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, plugin)); err != nil {
			missing = append(missing, filepath.Join(CNIBinDir, plugin))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s: apt-get install containerd runc containernetworking-plugins (make e2e-deps)", strings.Join(missing, ", "))
	}
	return nil
}

// config is containerd 1.6's configuration (version 2): everything under
// dir, the CRI plugin on the test's CNI network and sandbox image, network
// namespaces under its state directory so that Close can unmount them.
const config = `version = 2
root = "%[1]s/root"
state = "%[1]s/state"

[grpc]
  address = "%[1]s/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[2]s"
  netns_mounts_under_state_dir = true
  # The test machines deny CAP_SYS_RESOURCE, so a negative oom_score_adj
  # (the kubelet asks -998 for sandboxes) fails runc's init with "can't get
  # final child's PID from pipe: EOF"; this keeps it no lower than
  # containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[3]s"
    conf_dir = "%[1]s/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
`

// conflist is a bridge network with host-local addresses kept under dir; no
// IP masquerading, so the host's iptables are left alone.
const conflist = `{
  "cniVersion": "1.0.0",
  "name": "certagent-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "%[2]s",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "%[1]s/cni-ipam",
        "ranges": [[{"subnet": "%[3]s"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
`

// Start runs containerd with its configuration, state, socket and CNI
// configuration in dir (keep the path short: the socket's name must fit in
// 108 bytes), waits for its socket, and imports the image archive.
func Start(ctx context.Context, dir, imageArchive string) (*Containerd, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	lock, err := lockHost(hostLock)
	if err != nil {
		return nil, err
	}
	c, err := start(ctx, dir, imageArchive, lock)
	if err != nil {
		lock.Close()
	}
	return c, err
}

func start(ctx context.Context, dir, imageArchive string, lock *os.File) (*Containerd, error) {
	c := &Containerd{dir: dir, socket: filepath.Join(dir, "containerd.sock"), Log: filepath.Join(dir, "containerd.log"), exited: make(chan struct{}), lock: lock}
	c.Endpoint = "unix://" + c.socket
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, dir, ImageName, CNIBinDir), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-certagent-test.conflist"), fmt.Appendf(nil, conflist, dir, Bridge, Subnet), 0o644); err != nil {
		return nil, err
	}
	log, err := os.Create(c.Log)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	c.cmd = exec.Command("containerd", "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	// Setpgid: a terminal's ^C reaches the test, which stops containerd in
	// order; Pdeathsig: a killed test does not leave it running.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(c.cmd); err != nil {
		return nil, fmt.Errorf("start containerd: %w", err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if conn, err := net.Dial("unix", c.socket); err == nil {
			conn.Close()
			break
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("containerd exited at start; its log %s:\n%s", c.Log, tail(c.Log, 20))
		default:
		}
		if time.Now().After(deadline) {
			c.Close()
			return nil, fmt.Errorf("containerd's socket %s not up after 30 s; its log:\n%s", c.socket, tail(c.Log, 20))
		}
	}
	if out, err := c.ctr(ctx, "images", "import", imageArchive); err != nil {
		c.Close()
		return nil, fmt.Errorf("import the test image: %w\n%s", err, out)
	}
	if out, err := c.ctr(ctx, "images", "check", "name=="+ImageName); err != nil || !strings.Contains(out, "complete") {
		c.Close()
		return nil, fmt.Errorf("the imported test image is not complete: %v\n%s", err, out)
	}
	return c, nil
}

// ctr runs ctr against this containerd in the CRI's namespace.
func (c *Containerd) ctr(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", c.socket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// Close removes every container and task left in containerd, stops it,
// stops the shims it started, unmounts what is left under its directory,
// and removes the test bridge. The kubelet must be stopped first.
func (c *Containerd) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := c.ctr(ctx, "tasks", "list", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = c.ctr(ctx, "tasks", "kill", "-s", "SIGKILL", id)
			_, _ = c.ctr(ctx, "tasks", "delete", "-f", id)
		}
	}
	if out, err := c.ctr(ctx, "containers", "list", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			_, _ = c.ctr(ctx, "containers", "delete", id)
		}
	}
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	killShims(c.socket)
	unmountUnder(c.dir)
	_ = exec.Command("ip", "link", "delete", Bridge).Run()
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
}

// killShims kills the containerd-shim-runc-v2 processes started by the
// containerd at socket (their command line names its address).
func killShims(socket string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" || !strings.Contains(string(data), socket) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Unmount lazily unmounts every mount point below dir (the kubelet's root
// directory after a test: pod volumes).
func Unmount(dir string) { unmountUnder(dir) }

// unmountUnder lazily unmounts every mount point below dir, deepest first
// (sandbox shm, network namespaces, rootfs overlays).
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

func tail(path string, lines int) string {
	data, _ := os.ReadFile(path)
	l := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}
