package kubelettest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// Config is README step 5's KubeletConfiguration, plus what a
// kubeadm-style kubelet has beside it: x509 client authentication with the
// cluster CA (the API server's kubelet client certificate), and the file's
// defaults for the rest (webhook authentication and authorization, no
// anonymous access). The lines after the blank one fit the kubelet to the
// test machine, not to certagent: the runtime's socket, directories of the
// test's own, cgroupfs on the hosts' cgroup v1 (which the kubelet refuses
// unless told), no swap check, and eviction and image garbage collection
// thresholds that a nearly full CI disk does not trip.
//
// Its arguments: 1 the cert dir, 2 the client CA file, 3 the port, 4 the
// runtime's endpoint, 5 a directory for pod logs.
const Config = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
rotateCertificates: false
serverTLSBootstrap: false
tlsCertFile: %[1]s/kubelet-server-current.pem
tlsPrivateKeyFile: %[1]s/kubelet-server-current.pem
authentication:
  x509:
    clientCAFile: %[2]s
port: %[3]d
healthzPort: 0

containerRuntimeEndpoint: %[4]s
podLogsDirectory: %[5]s/pod-logs
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
evictionHard:
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  memory.available: "100Mi"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`

// ClientRotationLogged is what client-go's transport (cert_rotation.go)
// logs at -v=1 when it re-read the client certificate file, found it
// changed and closed its connections to use it. client-go 0.30 (the v1.30
// kubelet) logs it in lower case: KlogTimes matches either.
const ClientRotationLogged = "Certificate rotation detected, shutting down client connections"

// TLSFailureLogged matches what the kubelet and the API server log when a
// TLS peer's certificate is refused (a handshake ending in a certificate
// alert, or a verification error), not handshakes a prober merely closed
// ("EOF").
var TLSFailureLogged = regexp.MustCompile(`x509: |tls: bad certificate|tls: unknown certificate authority|tls: certificate required|tls: expired certificate|certificate has expired`)

// Start runs the kubelet with its log in a file; exited receives Wait's
// result. It is stopped when the test ends, before the container runtime.
func Start(t *testing.T, bin string, args ...string) (cmd *exec.Cmd, logPath string, exited <-chan error) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), "kubelet.log")
	cmd, exited = startLogging(t, logPath, bin, args...)
	return cmd, logPath, exited
}

// startLogging is Start with the log appended to logPath.
func startLogging(t *testing.T, logPath, bin string, args ...string) (cmd *exec.Cmd, exited <-chan error) {
	t.Helper()
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // not left running by a killed test
	if err := controlplane.Spawn(cmd); err != nil {
		t.Fatal(err)
	}
	result, done := make(chan error, 1), make(chan struct{})
	go func() { result <- cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		controlplane.Terminate(cmd.Process, done, 10*time.Second)
		log.Close()
	})
	return cmd, result
}

// NodeReady reports whether n's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// InternalIP is n's InternalIP address, "" if it has none.
func InternalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// FreePort is a TCP port that was free a moment ago.
func FreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TailFile is the last lines of path.
func TailFile(path string, lines int) string {
	data, _ := os.ReadFile(path)
	l := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}
