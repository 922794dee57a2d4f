package approver

import (
	"context"
	"os/exec"
	"syscall"
	"testing"

	"github.com/certagent/certagent/test/nodenet"
)

// The host side of TestTwoNodesInNetworkNamespaces's network (package
// nodenet): a bridge whose address the API server binds, and a namespace
// per node. The subnet and the names are fixed: one suite at a time owns
// them, by the lock file.
const (
	bridgeName = "cant-br"
	bridgeCIDR = "10.231.0.1/24"
	netnsLock  = "/run/lock/certagent-approver-netns.lock"
)

// bridge is the network setUp made, nil if the suite does not run as root
// (the API server then binds 127.0.0.1 and the test is skipped).
var bridge *nodenet.Bridge

func bridgeUp(ctx context.Context) (*nodenet.Bridge, error) {
	return nodenet.Up(ctx, bridgeName, bridgeCIDR, "cant-", netnsLock)
}

// netnsNode creates the network namespace ns (cant-…) with eth0 at cidr on
// the bridge; removed when the test ends.
func netnsNode(t *testing.T, ns, cidr string) {
	t.Helper()
	t.Cleanup(func() { bridge.DelNode(ns) })
	if err := bridge.AddNode(ns, cidr); err != nil {
		t.Fatal(err)
	}
}

// inNetns is cmd run in the network namespace ns (ip netns exec execs it,
// so it keeps its pid), killed if the test process dies.
func inNetns(cmd *exec.Cmd, ns string) *exec.Cmd {
	argv := nodenet.InNetns(ns, cmd.Args...)
	in := exec.Command(argv[0], argv[1:]...)
	in.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return in
}
