// Package nodenet gives test nodes network namespaces of their own: a bridge
// on the host whose address the API server binds, and per node a namespace
// with a veth pair (eth0 inside, <ns>-h on the bridge) and a default route
// via the bridge, so that a process started in it (InNetns) reaches the API
// server and picks its namespace's address as its primary IP, as on a
// machine of its own. Needs root. A suite owns its subnet and names while it
// holds a lock file (flock, released by the kernel if a run crashes); the
// holder first removes what a crashed run left. Shared by the approver and
// fleet suites.
package nodenet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Bridge is the host side: the bridge, its address, and the lock.
type Bridge struct {
	// Name is the bridge's; namespaces the suite creates start with Prefix.
	Name, Prefix string
	// IP is the bridge's address, for the API server to bind.
	IP   net.IP
	lock *os.File
}

// Up takes lockPath (waiting while another suite holds it, as long as ctx
// allows), removes leftovers (the bridge, namespaces named prefix…), and
// creates the bridge name with cidr.
func Up(ctx context.Context, name, cidr, prefix, lockPath string) (*Bridge, error) {
	ip, _, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
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
			return nil, fmt.Errorf("locking %s: %w", lockPath, err)
		}
		select {
		case <-ctx.Done():
			lock.Close()
			return nil, fmt.Errorf("waiting for %s (another suite owns %s): %w", lockPath, cidr, ctx.Err())
		case <-time.After(time.Second):
		}
	}
	b := &Bridge{Name: name, Prefix: prefix, IP: ip, lock: lock}
	b.removeAll()
	for _, args := range [][]string{
		{"link", "add", name, "type", "bridge"},
		{"addr", "add", cidr, "dev", name},
		{"link", "set", name, "up"},
	} {
		if err := ipCmd(args...); err != nil {
			b.Down()
			return nil, err
		}
	}
	return b, nil
}

// Down removes the bridge and every namespace named Prefix…, and releases
// the lock.
func (b *Bridge) Down() {
	if b == nil {
		return
	}
	b.removeAll()
	b.lock.Close() // releases the flock
}

func (b *Bridge) removeAll() {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if ns, _, _ := strings.Cut(strings.TrimSpace(l), " "); strings.HasPrefix(ns, b.Prefix) {
				b.DelNode(ns)
			}
		}
	}
	_ = ipCmd("link", "del", b.Name)
}

// AddNode creates the network namespace ns (named Prefix…) with eth0 at
// cidr, a veth whose other end ns-h is on the bridge, and a default route
// via the bridge.
func (b *Bridge) AddNode(ns, cidr string) error {
	if !strings.HasPrefix(ns, b.Prefix) {
		return fmt.Errorf("network namespace %q does not start with %q", ns, b.Prefix)
	}
	for _, args := range [][]string{
		{"netns", "add", ns},
		{"link", "add", ns + "-h", "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"link", "set", ns + "-h", "master", b.Name, "up"},
		{"-n", ns, "addr", "add", cidr, "dev", "eth0"},
		{"-n", ns, "link", "set", "eth0", "up"},
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "route", "add", "default", "via", b.IP.String()},
	} {
		if err := ipCmd(args...); err != nil {
			return err
		}
	}
	return nil
}

// DelNode removes the namespace ns and its host-side veth, if they exist.
func (b *Bridge) DelNode(ns string) {
	_ = ipCmd("netns", "del", ns)
	_ = ipCmd("link", "del", ns+"-h")
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// InNetns is argv run in the network namespace ns (ip netns exec execs it,
// so it keeps its pid).
func InNetns(ns string, argv ...string) []string {
	return append([]string{"ip", "netns", "exec", ns}, argv...)
}
