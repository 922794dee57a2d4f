package kubelettest

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// NotifySocket is a test listener on $NOTIFY_SOCKET, as systemd has.
type NotifySocket struct {
	Path string
	mu   sync.Mutex
	msgs []string
}

// NewNotifySocket listens on a fresh socket until the test ends.
func NewNotifySocket(t *testing.T) *NotifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "notify") // short path: unix socket names are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := &NotifySocket{Path: filepath.Join(dir, "sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.Path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			ns.mu.Lock()
			ns.msgs = append(ns.msgs, string(buf[:n]))
			ns.mu.Unlock()
		}
	}()
	return ns
}

// All are the messages received so far.
func (ns *NotifySocket) All() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.msgs...)
}

// WaitFor waits until a message satisfies match and returns it.
func (ns *NotifySocket) WaitFor(t *testing.T, what string, match func(string) bool, timeout time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, m := range ns.All() {
			if match(m) {
				return m
			}
		}
	}
	t.Fatalf("no %s notification after %s; got %q", what, timeout, ns.All())
	return ""
}
