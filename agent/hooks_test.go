package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/bootstrap/kubeconfig"
)

// hookRecorder is an in-process RunHook that checks, when it is called, that
// the whole step is on disk.
type hookRecorder struct {
	f     *daemonFixture
	mu    sync.Mutex
	calls []string // "<kind> ok" or "<kind> <what was wrong>"
	block bool     // wait for ctx to end (a hook that hangs)
	ended error    // ctx.Err() seen by a blocking hook
}

func (h *hookRecorder) run(ctx context.Context, _ config.Hook, env []string) ([]byte, error) {
	vars := map[string]string{}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		vars[k] = v
	}
	kind := vars["CERTAGENT_CERT_KIND"]
	verdict := "ok"
	pair, err := bootstrap.LoadPair(vars["CERTAGENT_CERT_FILE"])
	switch {
	case err != nil:
		verdict = "certificate unreadable: " + err.Error()
	case pair.Leaf.NotAfter.UTC().Format(time.RFC3339) != vars["CERTAGENT_NOT_AFTER"]:
		verdict = "CERTAGENT_NOT_AFTER is not the file's"
	case kind == "client":
		// kubelet.conf must already reference it and be accepted.
		rc, err := kubeconfig.LoadKubelet(h.f.cfg.Kubeconfig)
		if err != nil {
			verdict = "kubelet.conf not written yet: " + err.Error()
		} else if leaf, err := bootstrap.ClientCertificate(rc); err != nil || !leaf.Equal(pair.Leaf) {
			verdict = "kubelet.conf does not reference the new certificate"
		}
	}
	if h.block {
		<-ctx.Done()
		h.mu.Lock()
		h.ended = ctx.Err()
		h.mu.Unlock()
		return nil, ctx.Err()
	}
	h.mu.Lock()
	h.calls = append(h.calls, kind+" "+verdict)
	h.mu.Unlock()
	return nil, nil
}

func (h *hookRecorder) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func withHook(c *config.Config) { c.Hooks.PostRenew = []config.Hook{{Command: []string{"/recorded"}}} }

// TestHooksRunOnceTheStepIsOnDisk: the client hook runs after kubelet.conf
// references the new certificate, the serving hook after its certificate is
// stored; once per certificate stored, at bootstrap and at renewal.
func TestHooksRunOnceTheStepIsOnDisk(t *testing.T) {
	daemonTest(t, withHook, func(t *testing.T, f *daemonFixture) {
		h := &hookRecorder{f: f}
		f.opts.RunHook = h.run
		f.start()
		if got := strings.Join(h.got(), ", "); got != "client ok, server ok" {
			t.Fatalf("hooks after the bootstrap: %s", got)
		}
		f.advance(23*time.Hour + 10*time.Minute) // both renewed
		got := h.got()
		slices.Sort(got) // the two renewals fall in the same minute, in either order
		if got := strings.Join(got, ", "); got != "client ok, client ok, server ok, server ok" {
			t.Fatalf("hooks after a renewal: %s", got)
		}
		for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
			if _, err := os.Stat(hooksDuePath(f.cfg.CertDir, kind)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the %s hooks marker is left: %v", kind, err)
			}
		}
	})
}

// TestHooksRunOnlyForTheirKinds: a postRenew hook with kinds runs only for
// those certificates, one without for both; at bootstrap and at renewal.
func TestHooksRunOnlyForTheirKinds(t *testing.T) {
	hooks := []config.Hook{{Command: []string{"both"}}, {Command: []string{"server-only"}, Kinds: []string{"server"}}, {Command: []string{"client-only"}, Kinds: []string{"client"}}}
	daemonTest(t, func(c *config.Config) { c.Hooks.PostRenew = hooks }, func(t *testing.T, f *daemonFixture) {
		var mu sync.Mutex
		var calls []string
		f.opts.RunHook = func(_ context.Context, h config.Hook, env []string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			i := slices.IndexFunc(env, func(e string) bool { return strings.HasPrefix(e, "CERTAGENT_CERT_KIND=") })
			calls = append(calls, h.Command[0]+" for "+strings.TrimPrefix(env[i], "CERTAGENT_CERT_KIND="))
			return nil, nil
		}
		got := func() string {
			mu.Lock()
			defer mu.Unlock()
			c := slices.Clone(calls)
			slices.Sort(c)
			calls = nil
			return strings.Join(c, ", ")
		}
		want := "both for client, both for server, client-only for client, server-only for server"
		f.start()
		if g := got(); g != want {
			t.Fatalf("hooks after the bootstrap: %s, want %s", g, want)
		}
		f.advance(23*time.Hour + 10*time.Minute) // both renewed
		if g := got(); g != want {
			t.Fatalf("hooks after the renewals: %s, want %s", g, want)
		}
	})
}

// TestHooksRunAfterAnInterruptedBootstrap: a crash left the client
// certificate stored (and its hooks due) but kubelet.conf unwritten; the
// next start finishes the bootstrap without a new CSR and runs the hooks.
func TestHooksRunAfterAnInterruptedBootstrap(t *testing.T) {
	daemonTest(t, func(c *config.Config) { withHook(c); c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		h := &hookRecorder{f: f}
		f.opts.RunHook = h.run
		f.start()
		f.stop()
		// What the crash left: the certificate, the marker, no kubelet.conf, the token.
		if err := os.Remove(f.cfg.Kubeconfig); err != nil {
			t.Fatal(err)
		}
		if err := markHooksDue(f.cfg.CertDir, bootstrap.Client); err != nil {
			t.Fatal(err)
		}
		f.writeBootstrap()
		h.mu.Lock()
		h.calls = nil
		h.mu.Unlock()
		f.start()
		if n := f.clientCSRs(); n != 1 {
			t.Fatalf("%d client CSRs: the restart asked again instead of finishing", n)
		}
		if got := strings.Join(h.got(), ", "); got != "client ok" {
			t.Fatalf("hooks after finishing the bootstrap: %q", got)
		}
	})
}

// TestHooksStopWithTheAgent: SIGTERM (the root context) kills a running
// hook; its marker survives, so the hook runs after the restart.
func TestHooksStopWithTheAgent(t *testing.T) {
	daemonTest(t, func(c *config.Config) { withHook(c); c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		h := &hookRecorder{f: f, block: true}
		f.opts.RunHook = h.run
		f.start()
		f.stop()
		h.mu.Lock()
		ended := h.ended
		h.block = false
		h.mu.Unlock()
		if !errors.Is(ended, context.Canceled) {
			t.Fatalf("the hook saw %v when the agent stopped, want context.Canceled", ended)
		}
		if _, err := os.Stat(hooksDuePath(f.cfg.CertDir, bootstrap.Client)); err != nil {
			t.Fatalf("the hooks marker did not survive the stop: %v", err)
		}
		f.start()
		if got := strings.Join(h.got(), ", "); got != "client ok" {
			t.Fatalf("hooks after the restart: %q", got)
		}
	})
}

// TestHooksExec runs real commands (outside a bubble: they take real time):
// the documented environment, a failure and a timeout each counted.
func TestHooksExec(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env")
	sg := newSigner(t)
	_ = os.WriteFile(filepath.Join(dir, "ca.crt"), sg.pem, 0o600)
	boot := filepath.Join(dir, "etc", "bootstrap.conf")
	_ = os.MkdirAll(filepath.Dir(boot), 0o755)
	_ = os.WriteFile(boot, []byte(bootstrapKubeconfig), 0o600)
	cfg := config.Default()
	cfg.NodeName, cfg.CertDir, cfg.Kubeconfig, cfg.BootstrapKubeconfig = "node-a", filepath.Join(dir, "pki"), filepath.Join(dir, "etc", "kubelet.conf"), boot
	cfg.Serving.Enabled = new(bool)
	cfg.Hooks.PostRenew = []config.Hook{
		{Command: []string{"/bin/sh", "-c", "echo $CERTAGENT_CERT_KIND $CERTAGENT_CERT_FILE $CERTAGENT_NODE_NAME > " + out}},
		{Command: []string{"/bin/false"}},
		{Command: []string{"/bin/sleep", "10"}, Timeout: config.Duration{Duration: 100 * time.Millisecond}},
	}
	client := newFakeAPI(sg)
	a, err := New(cfg, Options{Clock: clocktesting.NewFakeClock(time.Now()), Notifier: &fakeNotifier{}, Bootstrap: func(bc *bootstrap.Config) {
		bc.NewCSRClient = func(*rest.Config) (apiclient.CSRClient, error) {
			return client.CertificatesV1().CertificateSigningRequests(), nil
		}
		bc.CheckIdentity = func(context.Context, *rest.Config, string) error { return nil }
		bc.PrimaryIP = func() net.IP { return nil }
	}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := a.RunOnce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a hook timeout of 100ms took %s", took)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := "client " + filepath.Join(cfg.CertDir, "kubelet-client-current.pem") + " node-a\n"; string(got) != want {
		t.Fatalf("hook saw %q, want %q", got, want)
	}
	hookErrors := a.certs.Get(bootstrap.Client).HookErrors
	if hookErrors != 2 {
		t.Fatalf("hook errors = %d, want 2 (a failure and a timeout)", hookErrors)
	}
}

// TestStatusIsNeverStale: the client and serving workers publish STATUS at
// the same time; the line systemd holds last must be the agent's state now.
// Before publishStatus was one step, a line rendered before the client's
// "waiting for a bootstrap kubeconfig" could be sent after it and stay
// ("client starting", seen in the node suite).
func TestStatusIsNeverStale(t *testing.T) {
	for i := 0; i < 200; i++ {
		n := &fakeNotifier{}
		a, err := New(func() config.Config { c := config.Default(); c.NodeName = "n"; return c }(), Options{Clock: clocktesting.NewFakeClock(time.Now()), Notifier: n})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var next atomic.Int64
		for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving, bootstrap.Client, bootstrap.Serving} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 50; j++ {
					a.mu.Lock()
					a.certs.Update(kind, func(c *observe.Cert) { c.LastErr = fmt.Errorf("attempt %d", next.Add(1)) })
					a.mu.Unlock()
					a.publishStatus()
				}
			}()
		}
		wg.Wait()
		if got, want := n.lastStatus(), a.statusLine(); got != want {
			t.Fatalf("round %d: systemd holds %q, the agent's state is %q", i, got, want)
		}
	}
}

// TestHookKindsAreTheCertificateKinds: the kinds a hook may name
// (agent/config, which does not import bootstrap) are the certificates'.
func TestHookKindsAreTheCertificateKinds(t *testing.T) {
	if want := []string{string(bootstrap.Client), string(bootstrap.Serving)}; !slices.Equal(config.HookKinds, want) {
		t.Fatalf("config.HookKinds = %v, want %v", config.HookKinds, want)
	}
}
