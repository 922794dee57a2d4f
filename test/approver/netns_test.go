package approver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The host side of TestTwoNodesInNetworkNamespaces's network: a bridge whose
// address the API server binds (so that namespaces on the bridge reach it),
// and a namespace per node with a veth pair, one end on the bridge. The
// subnet and the names are fixed, so one suite at a time may own them: a
// lock file says which (flock, released by the kernel if a run crashes), and
// its holder first removes what a crashed run left.
const (
	bridgeName = "cant-br"
	bridgeCIDR = "10.231.0.1/24"
	// netnsLock is held while the bridge exists.
	netnsLock = "/run/lock/certagent-approver-netns.lock"
)

// netnsNodes are the namespaces (host-side veth: <name>-h) the test may
// create, for removing a crashed run's leftovers.
var netnsNodes = []string{"cant-a", "cant-b"}

// bridge is the network setUp made, nil if the suite does not run as root
// (the API server then binds 127.0.0.1 and the test is skipped).
var bridge *hostBridge

type hostBridge struct {
	ip   net.IP
	lock *os.File
}

// bridgeUp takes the lock (waiting for another suite holding it, as long as
// ctx allows), removes leftovers, and creates the bridge with bridgeCIDR.
func bridgeUp(ctx context.Context) (*hostBridge, error) {
	ip, _, err := net.ParseCIDR(bridgeCIDR)
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(netnsLock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			lock.Close()
			return nil, fmt.Errorf("locking %s: %w", netnsLock, err)
		}
		select {
		case <-ctx.Done():
			lock.Close()
			return nil, fmt.Errorf("waiting for %s (another approver suite owns %s): %w", netnsLock, bridgeCIDR, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	b := &hostBridge{ip: ip, lock: lock}
	b.removeAll()
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", bridgeCIDR, "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			b.down()
			return nil, err
		}
	}
	return b, nil
}

// down removes the bridge and every namespace, and releases the lock.
func (b *hostBridge) down() {
	if b == nil {
		return
	}
	b.removeAll()
	b.lock.Close() // releases the flock
}

// removeAll deletes the namespaces, their host-side veths and the bridge,
// those that exist.
func (b *hostBridge) removeAll() {
	for _, ns := range netnsNodes {
		_ = ipCmd("netns", "del", ns)
		_ = ipCmd("link", "del", ns+"-h")
	}
	_ = ipCmd("link", "del", bridgeName)
}

// netnsNode creates the network namespace ns (one of netnsNodes) with eth0
// at cidr, a veth whose other end ns-h is on the bridge, and a default
// route via the bridge; removed when the test ends.
func netnsNode(t *testing.T, ns, cidr string) {
	t.Helper()
	t.Cleanup(func() {
		_ = ipCmd("netns", "del", ns)
		_ = ipCmd("link", "del", ns+"-h")
	})
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", ns + "-h", "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", ns + "-h", "master", bridgeName, "up"},
		{"-n", ns, "addr", "add", cidr, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "route", "add", "default", "via", bridge.ip.String()},
	} {
		if err := ipCmd(args...); err != nil {
			t.Fatal(err)
		}
	}
}

// ipCmd runs ip with args.
func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns is cmd run in the network namespace ns (ip netns exec execs it,
// so it keeps its pid), killed if the test process dies.
func inNetns(cmd *exec.Cmd, ns string) *exec.Cmd {
	in := exec.Command("ip", append([]string{"netns", "exec", ns}, cmd.Args...)...)
	in.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return in
}
