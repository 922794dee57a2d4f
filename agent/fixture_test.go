package agent

import (
	"context"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/internal/clocktest"
)

// fakeNotifier records what the agent tells systemd.
type fakeNotifier struct {
	mu       sync.Mutex
	msgs     []string
	watchdog time.Duration
}

func (f *fakeNotifier) add(m string) { f.mu.Lock(); f.msgs = append(f.msgs, m); f.mu.Unlock() }
func (f *fakeNotifier) Ready()       { f.add("READY=1") }
func (f *fakeNotifier) Status(l string) {
	f.add("STATUS=" + l)
}
func (f *fakeNotifier) Watchdog()                       { f.add("WATCHDOG=1") }
func (f *fakeNotifier) Stopping()                       { f.add("STOPPING=1") }
func (f *fakeNotifier) WatchdogInterval() time.Duration { return f.watchdog }

func (f *fakeNotifier) count(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

func (f *fakeNotifier) has(prefix string) bool { return f.count(prefix) > 0 }

// lastStatus is the last STATUS line.
func (f *fakeNotifier) lastStatus() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.msgs) - 1; i >= 0; i-- {
		if s, ok := strings.CutPrefix(f.msgs[i], "STATUS="); ok {
			return s
		}
	}
	return ""
}

const bootstrapKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: ../ca.crt}}]
users: [{name: u, user: {token: abcdef.0123456789abcdef}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`

// daemonFixture runs Agent.Run inside a synctest bubble against a fake API
// whose signer issues 24-hour certificates, on a clock with real monotonic
// semantics. File events come from the test (events), not from inotify.
type daemonFixture struct {
	t       *testing.T
	dir     string
	cfg     config.Config
	clk     *clocktest.Clock
	sg      *signer
	client  *fake.Clientset
	creates map[string]*atomic.Int32 // by signer
	pending atomic.Bool              // leave serving CSRs pending
	deny    atomic.Bool              // deny serving CSRs
	notify  *fakeNotifier
	events  chan struct{}
	logs    *observer.ObservedLogs
	opts    Options
	// identity answers CheckIdentity; default: the client certificate must
	// come from the signer's CA (a rebuilt cluster rejects the old one).
	identity func(rc *rest.Config) error
	// newEventClient, if set (eventsTo), is the bootstrapper's Event client
	// for the node's credential.
	newEventClient func(*rest.Config) (apiclient.EventClient, error)
	load           func() (config.Config, error)
	agent          *Agent
	cancel         context.CancelFunc
	done           chan error
	reload         chan struct{}
}

// newDaemonFixture must be called inside synctest.Test.
func newDaemonFixture(t *testing.T, mutate func(*config.Config)) *daemonFixture {
	dir := t.TempDir()
	f := &daemonFixture{
		t: t, dir: dir, clk: clocktest.New(time.Now()), client: fake.NewClientset(),
		creates: map[string]*atomic.Int32{certificatesv1.KubeAPIServerClientKubeletSignerName: {}, certificatesv1.KubeletServingSignerName: {}},
		notify:  &fakeNotifier{}, events: make(chan struct{}, 1), reload: make(chan struct{}, 1),
	}
	f.newCluster()
	f.client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		csr := a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest)
		f.creates[csr.Spec.SignerName].Add(1)
		if f.deny.Load() && csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
			csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: "True",
				Reason: "NotOurNode", Message: "the serving certificate names an address the node does not have"}}
			return false, nil, nil
		}
		if !(f.pending.Load() && csr.Spec.SignerName == certificatesv1.KubeletServingSignerName) {
			f.sg.sign(csr)
		}
		return false, nil, nil
	})
	f.identity = func(rc *rest.Config) error {
		leaf, err := bootstrap.ClientCertificate(rc)
		if err != nil {
			return err
		}
		if leaf.CheckSignatureFrom(f.sg.cert) != nil {
			return apierrors.NewUnauthorized("Unauthorized")
		}
		return nil
	}
	f.cfg = config.Default()
	f.cfg.NodeName, f.cfg.CertDir, f.cfg.Kubeconfig, f.cfg.BootstrapKubeconfig = "node-a", filepath.Join(dir, "pki"), filepath.Join(dir, "etc", "kubelet.conf"), filepath.Join(dir, "etc", "bootstrap.conf")
	f.cfg.Metrics.Address = ""
	f.cfg.Rotation.RenewBefore = config.Duration{Duration: time.Hour} // certificates live 24h: due after 23h
	if mutate != nil {
		mutate(&f.cfg)
	}
	f.writeBootstrap()
	core, logs := observer.New(zapcore.InfoLevel)
	f.logs = logs
	f.opts = Options{Logger: zap.New(core), Clock: f.clk, Rand: func() float64 { return 0 }, Notifier: f.notify, NoControlSocket: true,
		Watch: func(context.Context, *zap.Logger, ...string) (<-chan struct{}, error) { return f.events, nil },
		Bootstrap: func(bc *bootstrap.Config) {
			bc.NewCSRClient = func(*rest.Config) (apiclient.CSRClient, error) {
				return f.client.CertificatesV1().CertificateSigningRequests(), nil
			}
			bc.CheckIdentity = func(_ context.Context, rc *rest.Config, _ string) error { return f.identity(rc) }
			bc.PrimaryIP = func() net.IP { return net.ParseIP("10.0.0.7") }
			bc.NewEventClient = f.newEventClient
		}}
	return f
}

// eventsTo has the daemon write Events, as the CLI's does, with the Event
// client newClient builds from the node's credential.
func (f *daemonFixture) eventsTo(newClient func(*rest.Config) (apiclient.EventClient, error)) {
	f.opts.NewEventClient = (*bootstrap.Bootstrapper).NodeEventClient
	f.newEventClient = newClient
}

// newCluster replaces the cluster CA (a rebuilt cluster).
func (f *daemonFixture) newCluster() {
	f.sg = newSigner(f.t)
	f.sg.now = f.clk.Now
	if err := os.WriteFile(filepath.Join(f.dir, "ca.crt"), f.sg.pem, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *daemonFixture) writeBootstrap() {
	_ = os.MkdirAll(filepath.Dir(f.cfg.BootstrapKubeconfig), 0o755)
	if err := os.WriteFile(f.cfg.BootstrapKubeconfig, []byte(bootstrapKubeconfig), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// fileEvent is what inotify would report after a person changed a file.
func (f *daemonFixture) fileEvent() {
	select {
	case f.events <- struct{}{}:
	default:
	}
	synctest.Wait()
}

func (f *daemonFixture) clientCSRs() int32 {
	return f.creates[certificatesv1.KubeAPIServerClientKubeletSignerName].Load()
}
func (f *daemonFixture) servingCSRs() int32 {
	return f.creates[certificatesv1.KubeletServingSignerName].Load()
}

func (f *daemonFixture) start() {
	f.t.Helper()
	a, err := New(f.cfg, f.opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.agent = a
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- a.Run(ctx, f.reload, f.load) }()
	synctest.Wait()
}

func (f *daemonFixture) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	f.cancel = nil
	if err := <-f.done; err != nil {
		f.t.Error(err)
	}
}

// advance moves the clock by d, a minute at a time, letting the agent act.
func (f *daemonFixture) advance(d time.Duration) { f.advanceIn(d, time.Minute) }

// advanceIn moves the clock by d in steps of at most step.
func (f *daemonFixture) advanceIn(d, step time.Duration) {
	for d > 0 {
		s := min(d, step)
		f.clk.Step(s)
		synctest.Wait()
		d -= s
	}
}

func (f *daemonFixture) current(kind bootstrap.Kind) *x509.Certificate {
	pair, err := bootstrap.LoadCurrent(f.cfg.CertDir, kind)
	if err != nil {
		return nil
	}
	return pair.Leaf
}

func (f *daemonFixture) logged(msg string) int { return f.logs.FilterMessageSnippet(msg).Len() }

// daemonTest runs body in a synctest bubble with a started fixture.
func daemonTest(t *testing.T, mutate func(*config.Config), body func(t *testing.T, f *daemonFixture)) {
	synctest.Test(t, func(t *testing.T) {
		f := newDaemonFixture(t, mutate)
		defer f.stop()
		body(t, f)
	})
}
