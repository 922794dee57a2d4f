package agent

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/config"
)

// probe asks the agent's HTTP handler for path.
func probe(a *Agent, path string) (int, string) {
	rec := httptest.NewRecorder()
	a.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// TestNotReadyWhileTheAPIServerRejectsKubeletConf: the cluster was rebuilt
// (a new CA); kubelet.conf's certificate is still within its validity, but
// the API server answers 401. The agent must not say READY or "valid"; it
// says what is wrong and what to drop where, and a bootstrap kubeconfig
// dropped in place bootstraps the node again.
func TestNotReadyWhileTheAPIServerRejectsKubeletConf(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.start()
		f.stop()
		f.newCluster()
		f.notify.msgs = nil
		f.start()
		if f.notify.has("READY=1") {
			t.Fatal("READY=1 with a kubelet.conf the API server rejects")
		}
		want := "client rejected by the API server (Unauthorized); drop a bootstrap kubeconfig at " + f.cfg.BootstrapKubeconfig + " to bootstrap again; serving: waiting for a client certificate the API server accepts"
		if got := f.notify.lastStatus(); got != want {
			t.Fatalf("STATUS\n got %q\nwant %q", got, want)
		}
		if code, body := probe(f.agent, "/readyz"); code != 503 || !strings.Contains(body, "not accepted") {
			t.Fatalf("/readyz = %d %q", code, body)
		}
		if _, body := probe(f.agent, "/metrics"); !strings.Contains(body, "\ncertagent_ready 0\n") {
			t.Fatalf("certagent_ready is not 0:\n%s", body)
		}
		f.writeBootstrap() // with the new cluster's CA (ca.crt)
		f.fileEvent()
		if n := f.clientCSRs(); n != 2 {
			t.Fatalf("%d client CSRs after the bootstrap kubeconfig was dropped, want 2", n)
		}
		if !f.notify.has("READY=1") || !strings.HasPrefix(f.notify.lastStatus(), "client valid until") {
			t.Fatalf("not ready after bootstrapping again: %q", f.notify.lastStatus())
		}
		if code, _ := probe(f.agent, "/readyz"); code != 200 {
			t.Fatalf("/readyz = %d after bootstrapping again", code)
		}
		if _, err := os.Stat(f.cfg.BootstrapKubeconfig); !os.IsNotExist(err) {
			t.Fatal("the bootstrap kubeconfig was kept after it worked")
		}
		if f.servingCSRs() != 2 {
			t.Fatalf("%d serving CSRs: the serving certificate of the old cluster must be replaced", f.servingCSRs())
		}
	})
}

// TestRebuiltClusterWhileRunning: the report. The daemon runs and
// is ready; the control plane is rebuilt at the same address and a fresh
// bootstrap kubeconfig dropped in place. The daemon must check kubelet.conf
// afresh, find it rejected and bootstrap again (it used to keep the
// bootstrap kubeconfig and never bootstrap).
func TestRebuiltClusterWhileRunning(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		f.start()
		f.newCluster()
		f.writeBootstrap()
		f.fileEvent()
		if n := f.clientCSRs(); n != 2 {
			t.Fatalf("%d client CSRs, want 2 (bootstrapped again)", n)
		}
		if _, err := os.Stat(f.cfg.BootstrapKubeconfig); !os.IsNotExist(err) {
			t.Fatal("the bootstrap kubeconfig is still there")
		}
		if err := f.identity(mustNodeConfig(t, f)); err != nil {
			t.Fatalf("kubelet.conf after bootstrapping again: %v", err)
		}
	})
}

// TestTokenDroppedOnAHealthyNodeIsRemoved: a bootstrap kubeconfig dropped on
// a node whose kubelet.conf works is checked once and deleted, no CSR.
func TestTokenDroppedOnAHealthyNodeIsRemoved(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		f.start()
		f.writeBootstrap()
		f.fileEvent()
		if _, err := os.Stat(f.cfg.BootstrapKubeconfig); !os.IsNotExist(err) || f.clientCSRs() != 1 {
			t.Fatalf("token kept (%v) or a new CSR (%d)", err, f.clientCSRs())
		}
	})
}

// TestReadyWhenTheAPIServerCannotBeReached: at start the API server cannot
// be reached at all. kubelet.conf holds a valid certificate that nothing has
// rejected, so READY=1 is sent (the kubelet may be what runs the API server:
// it must not wait for it), but STATUS and /readyz say it is not confirmed;
// once the API server answers, both say so.
func TestReadyWhenTheAPIServerCannotBeReached(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		f.start()
		f.stop()
		down := true
		inner := f.identity
		f.identity = func(rc *rest.Config) error {
			if down {
				return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
			}
			return inner(rc)
		}
		f.notify.msgs = nil
		f.start()
		if !f.notify.has("READY=1") {
			t.Fatal("no READY=1 with a valid certificate and an unreachable API server")
		}
		if st := f.notify.lastStatus(); !strings.Contains(st, "retrying at") || !strings.Contains(st, "checking that the API server accepts kubelet.conf") {
			t.Fatalf("STATUS %q does not say the certificate is unconfirmed", st)
		}
		if code, _ := probe(f.agent, "/readyz"); code != 503 {
			t.Fatalf("/readyz = %d while unconfirmed", code)
		}
		down = false
		f.advance(2 * time.Second)
		if code, _ := probe(f.agent, "/readyz"); code != 200 || !strings.HasPrefix(f.notify.lastStatus(), "client valid until") {
			t.Fatalf("after the API server answered: /readyz %d, STATUS %q", code, f.notify.lastStatus())
		}
	})
}

func mustNodeConfig(t *testing.T, f *daemonFixture) *rest.Config {
	t.Helper()
	n, err := f.agent.bootstrapper().LoadNode()
	if err != nil {
		t.Fatal(err)
	}
	return n.Config
}
