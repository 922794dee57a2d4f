package e2e

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/util/certificate"
)

// notifySocket is a test listener on $NOTIFY_SOCKET, as systemd has.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "notify") // short path: unix socket names are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ns := &notifySocket{path: filepath.Join(dir, "sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: ns.path, Net: "unixgram"})
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

func (ns *notifySocket) all() []string {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return append([]string(nil), ns.msgs...)
}

// waitFor waits until a message satisfies match and returns it.
func (ns *notifySocket) waitFor(t *testing.T, what string, match func(string) bool, timeout time.Duration) string {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, m := range ns.all() {
			if match(m) {
				return m
			}
		}
	}
	t.Fatalf("no %s notification after %s; got %q", what, timeout, ns.all())
	return ""
}

// startDaemon runs `certagent run` with a notify socket and the watchdog on.
func (n *node) startDaemon(ns *notifySocket, extra ...string) *proc {
	n.t.Helper()
	return n.launch([]string{"NOTIFY_SOCKET=" + ns.path, "WATCHDOG_USEC=2000000"}, n.args(extra...)...)
}

var addrRE = regexp.MustCompile(`serving /metrics, /healthz and /readyz\s+\{"address": "([0-9.:]+)"`)

// httpAddr is the metrics listener's address, from the log.
func (p *proc) httpAddr(t *testing.T) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := addrRE.FindStringSubmatch(p.out.String()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no metrics address in the log:\n%s", p.out.String())
	return ""
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// approver approves every serving CSR of the node as it appears, until
// stopped. It runs in its own goroutine, so it never calls t.Fatal (which
// may only end the test's goroutine, and panics after the test ended): a
// failed list or approval is retried on the next turn.
func (n *node) approver(ctx context.Context) {
	for ctx.Err() == nil {
		if list, err := n.listCSRs(certificatesv1.KubeletServingSignerName); err == nil {
			for _, c := range list {
				if len(c.Status.Conditions) == 0 {
					_ = cp.ApproveCSR(ctx, c.Name)
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// current loads the node's current certificate of prefix through client-go's FileStore.
func (n *node) current(prefix string) *x509.Certificate {
	n.t.Helper()
	store, err := certificate.NewFileStore(prefix, n.certDir, n.certDir, "", "")
	if err != nil {
		n.t.Fatal(err)
	}
	c, err := store.Current()
	if err != nil {
		return nil
	}
	return c.Leaf
}

// metric returns the value of a sample line prefix in the /metrics text.
func metric(body, series string) string {
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, series+" ") {
			return strings.TrimPrefix(l, series+" ")
		}
	}
	return ""
}
