package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/test/clusterside"
	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/nodenet"
)

// The approver comparison's network: each node in a network namespace of
// its own on a bridge (package nodenet), so that each certagent asks for an
// address of its own, as on machines of their own (on one host they would
// all ask for the host's one address, which certagent's approver rightly
// refuses: IPOfAnotherNode).
const (
	approverBridge = "cfl-br"
	approverCIDR   = "10.232.0.1/16"
	approverLock   = "/run/lock/certagent-fleet-netns.lock"
	// adhocUser is the identity of the test's approver when it runs as a
	// process of its own (in system:masters, as an admin approving by hand,
	// and in the group the audit log records).
	adhocUser = "fleet-adhoc-approver"
	// adhocApproverEnv, set to a kubeconfig, makes the test binary the
	// test's approver (TestMain).
	adhocApproverEnv = "FLEET_ADHOC_APPROVER_KUBECONFIG"
	approverSAUser   = "system:serviceaccount:" + clusterside.Namespace + ":" + clusterside.ApproverServiceAccount
)

// nodeIP is the address of the i-th node's namespace (1-based).
func nodeIP(i int) string { return fmt.Sprintf("10.232.%d.%d", i/250, i%250+2) }

// TestServingApprovers runs the same fleet twice on one control plane, its
// serving CSRs approved first by the test's ad-hoc approver (approves
// every serving CSR, as the rest of the fleet suite does) and then by the
// real certagent-cluster approve, as its Deployment runs it: the shipped
// RBAC applied, the service account's kubeconfig. Each node runs in a
// network namespace of its own, and its Node is created before its
// certagent starts, with its namespace's address and its name, as
// provisioning would (docs/approver.md: a new node's first serving CSR comes
// before the Node its kubelet would create). Both approvers run as processes
// of their own (CPU, peak RSS); certagent's twice, with its client's rate
// limit as shipped and raised; then the approvers operators run today, where
// the environment names their binaries (anchors_test.go). Every node must end
// with its serving certificate, each CSR approved by the approver under test.
func TestServingApprovers(t *testing.T) {
	if !*flagApprover {
		t.Skip("the approver comparison: -fleet.approver or FLEET_APPROVER=1 (make fleet and make fleet-short set it)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the approver comparison needs root (a network namespace per node)")
	}
	setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	br, err := nodenet.Up(ctx, approverBridge, approverCIDR, "cfl-", approverLock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(br.Down)
	n := *flagApproverN
	if n == 0 {
		n = *flagN
	}
	for i := 1; i <= n; i++ {
		if err := br.AddNode(fmt.Sprintf("cfl-%04d", i), nodeIP(i)+"/16"); err != nil {
			t.Fatal(err)
		}
	}
	c := startClusterWith(t, "approvers", controlplane.Options{BindAddress: br.IP,
		ControllerManagerQPS: float32(*flagQPS), ControllerManagerBurst: 2 * int(*flagQPS)}, false)
	t.Cleanup(c.stop)
	dir := filepath.Join(work, "approvers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	kubectl, err := controlplane.EnsureKubectl(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := clusterside.ClusterBinary(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	saKubeconfig, err := clusterside.InstallApprover(ctx, c.ControlPlane, kubectl, dir)
	if err != nil {
		t.Fatal(err)
	}
	adhocKubeconfig, err := writeUserKubeconfig(c, dir, adhocUser, "system:masters", controlplane.AuditedGroup)
	if err != nil {
		t.Fatal(err)
	}
	anchors, err := anchorApprovers(c, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range append([]approverUnderTest{
		{name: "the test's ad-hoc approver", prefix: "aa", user: adhocUser, reason: "FleetApprove",
			start: func() (approverProcess, error) { return startAdhocApprover(dir, adhocKubeconfig) }},
		// Logs at info, as the Deployment runs it; its client limit as
		// shipped (QPS 20, burst 40), then raised as the controller-manager's.
		{name: "certagent-cluster approve", prefix: "ac", user: approverSAUser, reason: "NodeOwnsEveryName",
			start: func() (approverProcess, error) {
				return clusterside.StartApprover(ctx, bin, saKubeconfig, dir, "fleet", "--log-level", "info")
			}},
		{name: fmt.Sprintf("certagent-cluster approve --kube-api-qps %g --kube-api-burst %d", *flagQPS, 2*int(*flagQPS)), prefix: "aq", user: approverSAUser, reason: "NodeOwnsEveryName",
			start: func() (approverProcess, error) {
				return clusterside.StartApprover(ctx, bin, saKubeconfig, dir, "fleet-raised", "--log-level", "info",
					"--kube-api-qps", fmt.Sprint(*flagQPS), "--kube-api-burst", fmt.Sprint(2*int(*flagQPS)))
			}},
	}, anchors...) {
		t.Run(a.prefix, func(t *testing.T) { report.Approvers = append(report.Approvers, approverRun(t, c, a, n)) })
	}
}

// approverProcess is an approver running as a process of its own.
type approverProcess interface {
	PID() int
	Stop() int
}

// approverUnderTest is one of the two approvers compared.
type approverUnderTest struct {
	name, prefix, user, reason string
	start                      func() (approverProcess, error)
}

// writeUserKubeconfig writes a kubeconfig with a client certificate of user
// in groups.
func writeUserKubeconfig(c *cluster, dir, user string, groups ...string) (string, error) {
	cfg, err := c.UserConfig(user, groups...)
	if err != nil {
		return "", err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: user}
	kc.CurrentContext = "c"
	path := filepath.Join(dir, "kubeconfig-"+user)
	return path, clientcmd.WriteToFile(*kc, path)
}

// adhocProcess is the test binary running the ad-hoc approver.
type adhocProcess struct{ cmd *exec.Cmd }

func (p adhocProcess) PID() int { return p.cmd.Process.Pid }

func (p adhocProcess) Stop() int {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

// startAdhocApprover runs the test binary as the ad-hoc approver, with
// kubeconfig.
func startAdhocApprover(dir, kubeconfig string) (approverProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "adhoc-approver.log"))
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), adhocApproverEnv+"="+kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(cmd); err != nil {
		return nil, err
	}
	return adhocProcess{cmd}, nil
}

// runAdhocApprover is the ad-hoc approver's process: approveServing with
// the kubeconfig's client (no client-side limit), until SIGTERM.
func runAdhocApprover(kubeconfig string) int {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.QPS, cfg.Burst, cfg.UserAgent = -1, 0, "fleet-approver"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	approveServing(ctx, func() kubernetes.Interface { return cs })
	return 0
}

// makeNodes creates each member's Node as provisioning would, before its
// kubelet: its name and its namespace's address; deleted when the test ends.
func makeNodes(t *testing.T, c *cluster, f *fleet) {
	t.Helper()
	err := f.parallel(func(m *member) error {
		i := indexOf(f, m) + 1
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: m.name}}
		made, err := c.api().CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		made.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP(i)}, {Type: corev1.NodeHostName, Address: m.name}}
		_, err = c.api().CoreV1().Nodes().UpdateStatus(context.Background(), made, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("creating the Nodes: %v", err)
	}
	t.Cleanup(func() {
		_ = f.parallel(func(m *member) error {
			return c.api().CoreV1().Nodes().Delete(context.Background(), m.name, metav1.DeleteOptions{})
		})
	})
}
