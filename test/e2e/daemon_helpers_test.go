package e2e

import (
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/certagent/certagent/test/kubelettest"
	"k8s.io/client-go/util/certificate"
)

// notifySocket is a test listener on $NOTIFY_SOCKET, as systemd has.
type notifySocket = kubelettest.NotifySocket

func newNotifySocket(t *testing.T) *notifySocket { return kubelettest.NewNotifySocket(t) }

// startDaemon runs `certagent run` with a notify socket and the watchdog on.
func (n *node) startDaemon(ns *notifySocket, extra ...string) *proc {
	n.t.Helper()
	return n.launch([]string{"NOTIFY_SOCKET=" + ns.Path, "WATCHDOG_USEC=2000000"}, n.args(extra...)...)
}

// httpAddr is the metrics listener's address, from the log.
func (p *proc) httpAddr(t *testing.T) string {
	t.Helper()
	return kubelettest.MetricsAddr(t, p.out.String)
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
func (n *node) approver(ctx context.Context) { kubelettest.ApproveServing(ctx, cp, n.name) }

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
