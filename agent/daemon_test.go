package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/bootstrap"
)

// fakeNotifier records what the agent tells systemd.
type fakeNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (f *fakeNotifier) add(m string) { f.mu.Lock(); f.msgs = append(f.msgs, m); f.mu.Unlock() }
func (f *fakeNotifier) Ready()       { f.add("READY=1") }
func (f *fakeNotifier) Status(l string) {
	f.add("STATUS=" + l)
}
func (f *fakeNotifier) Watchdog()                       { f.add("WATCHDOG=1") }
func (f *fakeNotifier) Stopping()                       { f.add("STOPPING=1") }
func (f *fakeNotifier) WatchdogInterval() time.Duration { return 0 }
func (f *fakeNotifier) has(prefix string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.msgs {
		if strings.HasPrefix(m, prefix) {
			return true
		}
	}
	return false
}

// daemonFixture runs Agent.Run against a fake API that issues every CSR.
type daemonFixture struct {
	t       *testing.T
	cfg     Config
	clk     *clocktesting.FakeClock
	client  *fake.Clientset
	creates atomic.Int32
	notify  *fakeNotifier
	agent   *Agent
	cancel  context.CancelFunc
	done    chan error
	reload  chan struct{}
}

func newDaemonFixture(t *testing.T, mutate func(*Config)) *daemonFixture {
	dir := t.TempDir()
	sg := newSigner(t)
	_ = os.WriteFile(filepath.Join(dir, "ca.crt"), sg.pem, 0o600)
	boot := filepath.Join(dir, "etc", "bootstrap.conf")
	_ = os.MkdirAll(filepath.Dir(boot), 0o755)
	_ = os.WriteFile(boot, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: ../ca.crt}}]
users: [{name: u, user: {token: abcdef.0123456789abcdef}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	f := &daemonFixture{t: t, clk: clocktesting.NewFakeClock(time.Now()), client: fake.NewClientset(), notify: &fakeNotifier{}, reload: make(chan struct{}, 1)}
	sg.now = f.clk.Now
	f.client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		f.creates.Add(1)
		sg.sign(a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest))
		return false, nil, nil
	})
	f.cfg = DefaultConfig()
	f.cfg.NodeName, f.cfg.CertDir, f.cfg.Kubeconfig, f.cfg.BootstrapKubeconfig = "node-a", filepath.Join(dir, "pki"), filepath.Join(dir, "etc", "kubelet.conf"), boot
	f.cfg.Metrics.Address = ""
	f.cfg.Rotation.RenewBefore = Duration{time.Hour} // certificates live 24h: due after 23h
	if mutate != nil {
		mutate(&f.cfg)
	}
	a, err := New(f.cfg, Options{Clock: f.clk, Rand: func() float64 { return 0 }, Notifier: f.notify, Bootstrap: func(bc *bootstrap.Config) {
		bc.NewCSRClient = func(*rest.Config) (bootstrap.CSRClient, error) {
			return f.client.CertificatesV1().CertificateSigningRequests(), nil
		}
		bc.CheckIdentity = func(context.Context, *rest.Config, string) error { return nil }
		bc.PrimaryIP = func() net.IP { return net.ParseIP("10.0.0.7") }
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.agent = a
	return f
}

func (f *daemonFixture) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- f.agent.Run(ctx, f.reload, nil) }()
	f.t.Cleanup(f.stop)
}

func (f *daemonFixture) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.cancel = nil
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Error(err)
		}
	case <-time.After(10 * time.Second):
		f.t.Error("Run did not return after cancel")
	}
}

// settle waits until the agent's goroutines sleep on the fake clock with n creates made.
func (f *daemonFixture) settle(creates int32) {
	f.t.Helper()
	waitFor(f.t, func() bool { return f.creates.Load() == creates && f.clk.HasWaiters() })
	time.Sleep(50 * time.Millisecond)
	if got := f.creates.Load(); got != creates {
		f.t.Fatalf("%d CSRs created, want %d", got, creates)
	}
}

func TestDaemonRenewsAtDeadlineOnTheFakeClock(t *testing.T) {
	f := newDaemonFixture(t, nil)
	f.start()
	f.settle(2) // client bootstrap + serving
	waitFor(t, func() bool { return f.notify.has("READY=1") && f.notify.has("STATUS=client valid until") })
	if !f.notify.has("STATUS=client valid until") {
		t.Fatal("no STATUS line")
	}
	// Just before the deadline (23h after issue, minus the signer's 1m backdate): nothing.
	f.clk.Step(22*time.Hour + 50*time.Minute)
	f.settle(2)
	// Past it: both are renewed, once.
	f.clk.Step(20 * time.Minute)
	f.settle(4)
	f.stop()
	if !f.notify.has("STOPPING=1") {
		t.Fatal("no STOPPING=1 on the way out")
	}
}

func TestDaemonReloadRenewsNow(t *testing.T) {
	f := newDaemonFixture(t, nil)
	f.start()
	f.settle(2)
	f.reload <- struct{}{}
	f.settle(4)
}

func TestDaemonWaitsForCredentialsThenBootstraps(t *testing.T) {
	f := newDaemonFixture(t, func(c *Config) { c.Serving.Enabled = new(bool) })
	boot, _ := os.ReadFile(f.cfg.BootstrapKubeconfig)
	_ = os.Remove(f.cfg.BootstrapKubeconfig)
	f.start()
	f.settle(0)
	waitFor(t, func() bool {
		return f.notify.has("STATUS=waiting for a bootstrap kubeconfig at " + f.cfg.BootstrapKubeconfig)
	})
	if f.notify.has("READY=1") {
		t.Fatal("READY=1 without a client certificate")
	}
	// The file watcher notices the new file without any clock movement.
	_ = os.WriteFile(f.cfg.BootstrapKubeconfig, boot, 0o600)
	f.settle(1)
	waitFor(t, func() bool { return f.notify.has("READY=1") })
}

func TestHooks(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	f := newDaemonFixture(t, func(c *Config) {
		c.Serving.Enabled = new(bool)
		c.Hooks.PostRenew = []Hook{
			{Command: []string{"/bin/sh", "-c", "echo $CERTAGENT_CERT_KIND $CERTAGENT_CERT_FILE $CERTAGENT_NODE_NAME > " + out}},
			{Command: []string{"/bin/false"}},
			{Command: []string{"/bin/sleep", "10"}, Timeout: Duration{100 * time.Millisecond}},
		}
	})
	start := time.Now()
	if err := f.agent.RunOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a hook timeout of 100ms took %s", took)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "client " + filepath.Join(f.cfg.CertDir, "kubelet-client-current.pem") + " node-a\n"; string(got) != want {
		t.Fatalf("hook saw %q, want %q", got, want)
	}
	f.agent.mu.Lock()
	hookErrors := f.agent.state(bootstrap.Client).hookErrors
	f.agent.mu.Unlock()
	if hookErrors != 2 {
		t.Fatalf("hook errors = %d, want 2 (a failure and a timeout)", hookErrors)
	}
}

func TestStatusLine(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name           string
		client, server certState
		want           string
	}{
		{"both valid", certState{notAfter: now.Add(100 * 24 * time.Hour), deadline: now.Add(80 * 24 * time.Hour)},
			certState{notAfter: now.Add(time.Hour), deadline: now.Add(30 * time.Minute)},
			"client valid until 2027-03-02 (renews in 80d); serving: valid until 2026-11-22 (renews in 30m0s)"},
		{"serving waiting", certState{notAfter: now.Add(48 * time.Hour), deadline: now.Add(-time.Minute)},
			certState{waitingCSR: "node-csr-abc"},
			"client valid until 2026-11-24 (renewal due now); serving: waiting for approval of node-csr-abc (kubectl certificate approve node-csr-abc)"},
		{"no credentials", certState{lastErr: bootstrap.ErrNoCredentials}, certState{lastErr: errNeedClient},
			"waiting for a bootstrap kubeconfig at /etc/kubernetes/bootstrap-kubelet.conf (no valid /etc/kubernetes/kubelet.conf); serving: waiting for the client certificate"},
		{"failing", certState{notAfter: now.Add(48 * time.Hour), lastErr: context.DeadlineExceeded, retryAt: now.Add(8 * time.Second)}, certState{},
			"client valid until 2026-11-24, retry in 8s after: context deadline exceeded; serving: starting"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(func() Config { c := DefaultConfig(); c.NodeName = "n"; return c }(), Options{Clock: clocktesting.NewFakeClock(now), Notifier: &fakeNotifier{}})
			if err != nil {
				t.Fatal(err)
			}
			*a.state(bootstrap.Client), *a.state(bootstrap.Serving) = tc.client, tc.server
			if got := a.statusLine(); got != tc.want {
				t.Fatalf("status line\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
