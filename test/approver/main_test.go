// Package approver runs the kubelet serving CSR approver (the built
// certagent-cluster approve) against a real kube-apiserver,
// kube-controller-manager and etcd, as the service account of
// packaging/cluster/approver with exactly its RBAC, and makes CSRs with
// nodes' own credentials (client certificates of system:node:<name> in
// system:nodes). As root, the API server listens on the address of a bridge
// the suite creates, for nodes in network namespaces (netns_test.go). One
// test runs the real kubelet on containerd (kubelet_test.go, root and
// make e2e-deps).
package approver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

const (
	namespace      = "certagent-system"
	serviceAccount = "certagent-approver"
	// dnsSuffix is the shared approver's --dns-suffix.
	dnsSuffix = "nodes.example.test"
)

var (
	cp           *controlplane.ControlPlane
	clusterBin   string
	certagentBin string
	kubectlBin   string
	work         string
	// saKubeconfig authenticates as the approver's service account.
	saKubeconfig string
	// shared is the approver the tests share: default mode (refusals left
	// pending).
	shared *approverProc
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "approver: "+format+"\n", args...) }
	var err error
	if work, err = os.MkdirTemp("", "certagent-approver-"); err != nil {
		logf("%v", err)
		return 1
	}
	defer os.RemoveAll(work)
	defer func() { bridge.down() }()
	if err := setUp(ctx, logf); err != nil {
		logf("%v", err)
		return 1
	}
	defer cp.Stop()
	defer func() { shared.stop() }()
	code := m.Run()
	if code != 0 {
		logf("the shared approver's log:\n%s", tail(shared.logText(), 40))
	}
	return code
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// setUp builds or finds the binaries, starts the control plane, applies the
// shipped Namespace and approver RBAC as an operator would, and starts the
// approver as its Deployment runs it, with the service account's token.
func setUp(ctx context.Context, logf func(string, ...any)) error {
	var err error
	if clusterBin, err = binary(ctx, "CERTAGENT_CLUSTER_BIN", "certagent-cluster"); err != nil {
		return fmt.Errorf("building certagent-cluster: %w", err)
	}
	if certagentBin, err = binary(ctx, "CERTAGENT_BIN", "certagent"); err != nil {
		return fmt.Errorf("building certagent: %w", err)
	}
	bins, err := controlplane.EnsureBinaries(ctx, logf)
	if err != nil {
		return fmt.Errorf("building the control plane: %w", err)
	}
	if kubectlBin, err = controlplane.EnsureKubectl(ctx, logf); err != nil {
		return fmt.Errorf("building kubectl: %w", err)
	}
	opts := controlplane.Options{Dir: filepath.Join(work, "cp"), Logf: logf}
	if os.Geteuid() == 0 { // the API server on the bridge, for TestTwoNodesInNetworkNamespaces
		if bridge, err = bridgeUp(ctx); err != nil {
			return fmt.Errorf("creating the bridge for network namespaces: %w", err)
		}
		opts.BindAddress = bridge.ip
	}
	if cp, err = controlplane.Start(ctx, bins, opts); err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	manifests, err := filepath.Abs(filepath.Join("..", "..", "packaging", "cluster"))
	if err != nil {
		return err
	}
	for _, f := range []string{"00-namespace.yaml", "approver/20-rbac.yaml"} {
		cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", cp.AdminKubeconfig, "apply", "--server-side", "-f", filepath.Join(manifests, f))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("kubectl apply -f %s: %w\n%s", f, err, out)
		}
	}
	saKubeconfig = filepath.Join(work, "kubeconfig-approver")
	if err := cp.ServiceAccountKubeconfig(ctx, namespace, serviceAccount, saKubeconfig); err != nil {
		return err
	}
	if shared, err = startApprover(ctx, "shared", "--dns-suffix", dnsSuffix); err != nil {
		return err
	}
	logf("control plane at %s, approver log %s", cp.URL, shared.logPath)
	return nil
}

// binary is $env (the Makefile builds it), else a build of ../../cmd/<name>.
func binary(ctx context.Context, env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(work, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/"+name)
	cmd.Dir = filepath.Join("..", "..")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return out, cmd.Run()
}

// approverProc is one certagent-cluster approve process.
type approverProc struct {
	name, logPath, health string
	cmd                   *exec.Cmd
	done                  chan struct{}
}

// startApprover runs certagent-cluster approve with the service account's
// kubeconfig and extra flags, and waits for /readyz.
func startApprover(ctx context.Context, name string, extra ...string) (*approverProc, error) {
	a := &approverProc{name: name, logPath: filepath.Join(work, "approver-"+name+".log"), health: freeAddr(), done: make(chan struct{})}
	logFile, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	a.cmd = exec.Command(clusterBin, append([]string{"approve", "--kubeconfig", saKubeconfig,
		"--health-listen", a.health, "--log-level", "debug"}, extra...)...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(a.cmd); err != nil {
		return nil, fmt.Errorf("starting certagent-cluster approve: %w", err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		select {
		case <-a.done:
			return nil, fmt.Errorf("certagent-cluster approve exited: %v\n%s", a.cmd.ProcessState, a.logText())
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if rsp, err := http.Get("http://" + a.health + "/readyz"); err == nil {
			rsp.Body.Close()
			if rsp.StatusCode == http.StatusOK {
				return a, nil
			}
		}
	}
	a.stop()
	return nil, fmt.Errorf("certagent-cluster approve not ready after a minute:\n%s", a.logText())
}

// stop sends SIGTERM and waits; the exit code (-1 if killed).
func (a *approverProc) stop() int {
	if a == nil || a.cmd == nil {
		return -1
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
		return -1
	}
	return a.cmd.ProcessState.ExitCode()
}

func (a *approverProc) logText() string {
	data, _ := os.ReadFile(a.logPath)
	return string(data)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
