package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
)

func TestDaemonRenewsAtDeadline(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.start()
		if f.clientCSRs() != 1 || f.servingCSRs() != 1 {
			t.Fatalf("after start: %d client and %d serving CSRs, want 1 and 1", f.clientCSRs(), f.servingCSRs())
		}
		if !f.notify.has("READY=1") || !strings.HasPrefix(f.notify.lastStatus(), "client valid until ") {
			t.Fatalf("READY and STATUS: %q", f.notify.msgs)
		}
		// Just before the deadline (23 h after issue, minus the signer's 1 m backdate): nothing.
		f.advance(22*time.Hour + 50*time.Minute)
		if f.clientCSRs() != 1 || f.servingCSRs() != 1 {
			t.Fatal("renewed before the deadline")
		}
		// Past it: both are renewed, once.
		f.advance(20 * time.Minute)
		if f.clientCSRs() != 2 || f.servingCSRs() != 2 {
			t.Fatalf("after the deadline: %d client and %d serving CSRs, want 2 and 2", f.clientCSRs(), f.servingCSRs())
		}
		f.stop()
		if !f.notify.has("STOPPING=1") {
			t.Fatal("no STOPPING=1 on the way out")
		}
	})
}

// TestDaemonOverAYear: 24-hour certificates over a simulated year: every
// renewal on time, never two CSRs for one renewal, no certificate expired.
func TestDaemonOverAYear(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Rotation.RenewBefore = config.Duration{} }, func(t *testing.T, f *daemonFixture) {
		f.start()
		for day := 0; day < 365; day++ {
			f.advanceIn(24*time.Hour, 30*time.Minute)
			for _, kind := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
				if c := f.current(kind); c == nil || !f.clk.Now().Before(c.NotAfter) {
					t.Fatalf("day %d: the %s certificate expired or vanished", day, kind)
				}
			}
		}
		// 70-90 % of 24 h: between 365/0.9 and 365/0.7 renewals.
		for _, n := range []int32{f.clientCSRs(), f.servingCSRs()} {
			if n < 365*10/9 || n > 365*10/7+2 {
				t.Fatalf("%d CSRs in a year of 24-hour certificates", n)
			}
		}
	})
}

// TestDaemonRenewsWithinAMinuteOfResume: the machine sleeps through the
// deadline (and NotAfter). Monotonic timers stood still; the agent renews by
// the wall clock within a minute of waking (the jump detector).
func TestDaemonRenewsWithinAMinuteOfResume(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		f.start()
		// Asleep from 1 h to 23.5 h after issue: past the deadline (23 h),
		// before NotAfter (24 h). A monotonic timer would fire 22 h later.
		f.advance(time.Hour)
		f.clk.Suspend(22*time.Hour + 30*time.Minute)
		f.advance(time.Minute)
		if n := f.clientCSRs(); n != 2 {
			t.Fatalf("%d client CSRs a minute after resuming past the deadline, want 2", n)
		}
		if c := f.current(bootstrap.Client); c == nil || !f.clk.Now().Before(c.NotAfter) {
			t.Fatal("no valid client certificate after resuming")
		}
		if f.logged("the wall clock jumped") != 1 {
			t.Fatal("the jump was not logged")
		}
	})
}

// TestDaemonNoStormFromAShortSigner: renewBefore longer than what the
// signer issues (no requestedDuration to validate against): the agent falls
// back to 70-90 % and never renews in a loop.
func TestDaemonNoStormFromAShortSigner(t *testing.T) {
	daemonTest(t, func(c *config.Config) {
		c.Rotation.RenewBefore = config.Duration{Duration: 48 * time.Hour}
		c.Serving.Enabled = new(bool)
	}, func(t *testing.T, f *daemonFixture) {
		f.start()
		time.Sleep(time.Hour) // bubble time; the agent's clock stands still
		synctest.Wait()
		if n := f.clientCSRs(); n != 1 {
			t.Fatalf("%d client CSRs with the clock standing still", n)
		}
		f.advance(72 * time.Hour)
		if n := f.clientCSRs(); n > 1+72/16 {
			t.Fatalf("%d client CSRs over 3 days of 24-hour certificates", n)
		}
	})
}

// TestDaemonReloadAppliesOnlyWhatChanged: SIGHUP re-reads the file through
// the command line's own loader. An unchanged file does nothing, a new
// serving name posts one serving CSR (the certificate no longer covers it),
// a new renewBefore moves the deadline without a CSR, a setting that needs
// a restart is refused whole, and a broken file keeps the running config.
func TestDaemonReloadAppliesOnlyWhatChanged(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		path := filepath.Join(f.dir, "config.yaml")
		write := func(body string) {
			if err := os.WriteFile(path, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nmetrics: {address: \"\"}\n"+body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		write("rotation: {renewBefore: 1h}\n")
		// The file, with run's flags over it (--node-name, --cert-dir,
		// --kubeconfig, --bootstrap-kubeconfig), as the command loads it.
		flags := f.cfg
		f.load = func() (config.Config, error) {
			cfg, err := config.Load(path, true)
			cfg.NodeName, cfg.CertDir, cfg.Kubeconfig, cfg.BootstrapKubeconfig = flags.NodeName, flags.CertDir, flags.Kubeconfig, flags.BootstrapKubeconfig
			return cfg, err
		}
		cfg, err := f.load()
		if err != nil {
			t.Fatal(err)
		}
		f.cfg = cfg
		f.start()
		hup := func() { f.reload <- struct{}{}; synctest.Wait() }

		hup()
		if f.clientCSRs() != 1 || f.servingCSRs() != 1 || f.logged("reload: configuration unchanged") != 1 {
			t.Fatalf("an unchanged reload: %d/%d CSRs", f.clientCSRs(), f.servingCSRs())
		}

		write("rotation: {renewBefore: 1h}\nserving: {dnsNames: [node-a.example]}\n")
		hup()
		if f.clientCSRs() != 1 || f.servingCSRs() != 2 {
			t.Fatalf("a new serving name: %d client, %d serving CSRs, want 1 and 2", f.clientCSRs(), f.servingCSRs())
		}
		if c := f.current(bootstrap.Serving); c == nil || !slices.Contains(c.DNSNames, "node-a.example") {
			t.Fatal("the serving certificate does not carry the new name")
		}

		before := f.notify.lastStatus()
		write("rotation: {renewBefore: 2h}\nserving: {dnsNames: [node-a.example]}\n")
		hup()
		if f.clientCSRs() != 1 || f.servingCSRs() != 2 {
			t.Fatal("a new renewBefore posted a CSR")
		}
		if after := f.notify.lastStatus(); after == before {
			t.Fatalf("the renewal time in STATUS did not move: %q", after)
		}

		// metrics.address needs a restart; the hook added with it must not
		// slip in either (a refused reload applies nothing).
		write("rotation: {renewBefore: 2h}\nserving: {dnsNames: [node-a.example]}\nhooks: {postRenew: [{command: [/bin/true]}]}\n")
		body := strings.Replace(string(mustReadFile(t, path)), `metrics: {address: ""}`, `metrics: {address: "127.0.0.1:10999"}`, 1)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		hup()
		entries := f.logs.FilterMessageSnippet("reload: refused").All()
		if len(entries) != 1 || !slices.Equal(entries[0].ContextMap()["settings"].([]interface{}), []interface{}{"metrics.address"}) {
			t.Fatalf("a metrics.address change was not refused by name: %v", entries)
		}
		if got := f.agent.Config(); got.Metrics.Address != "" || len(got.Hooks.PostRenew) != 0 {
			t.Fatal("a refused reload changed the running configuration")
		}

		write("rotation: {renewBefore: nonsense}\n")
		hup()
		if f.logged("reload: keeping the running configuration") != 1 {
			t.Fatal("a broken file was not reported")
		}
		if f.clientCSRs() != 1 || f.servingCSRs() != 2 {
			t.Fatal("reloads posted CSRs")
		}
	})
}

func TestDaemonWaitsForCredentialsThenBootstraps(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		_ = os.Remove(f.cfg.BootstrapKubeconfig)
		f.start()
		if got, want := f.notify.lastStatus(), "waiting for a bootstrap kubeconfig at "+f.cfg.BootstrapKubeconfig+" (no valid "+f.cfg.Kubeconfig+")"; got != want {
			t.Fatalf("STATUS %q, want %q", got, want)
		}
		if f.notify.has("READY=1") {
			t.Fatal("READY=1 without a client certificate")
		}
		// A file event (no clock movement) brings the new file to its attention.
		f.writeBootstrap()
		f.fileEvent()
		if f.clientCSRs() != 1 || !f.notify.has("READY=1") {
			t.Fatalf("%d client CSRs after the bootstrap kubeconfig appeared; READY %v", f.clientCSRs(), f.notify.has("READY=1"))
		}
	})
}

// TestDaemonChecksFilesWhenInotifyIsExhausted: without a file watcher (the
// node's inotify limits reached) the agent says so once and checks the files
// every minute instead.
func TestDaemonChecksFilesWhenInotifyIsExhausted(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		f.opts.Watch = func(context.Context, *zap.Logger, ...string) (<-chan struct{}, error) {
			return nil, &os.SyscallError{Syscall: "inotify_init1", Err: syscall.EMFILE}
		}
		f.start()
		if n := f.logged("not watching files; checking them every minute instead"); n != 1 {
			t.Fatalf("logged %d times", n)
		}
		if err := os.Remove(f.cfg.Kubeconfig); err != nil {
			t.Fatal(err)
		}
		_ = os.Remove(f.cfg.BootstrapKubeconfig)
		f.advance(time.Minute)
		if !strings.HasPrefix(f.notify.lastStatus(), "waiting for a bootstrap kubeconfig") {
			t.Fatalf("STATUS a minute after kubelet.conf vanished: %q", f.notify.lastStatus())
		}
		f.writeBootstrap()
		f.advance(time.Minute)
		// The stored certificate is still valid: the bootstrap is finished
		// with it, without a new request.
		if _, err := os.Stat(f.cfg.Kubeconfig); err != nil || f.clientCSRs() != 1 {
			t.Fatalf("a minute after the bootstrap kubeconfig appeared: kubelet.conf %v, %d client CSRs (want it back, 1 CSR)", err, f.clientCSRs())
		}
		if !strings.HasPrefix(f.notify.lastStatus(), "client valid until") {
			t.Fatalf("STATUS %q", f.notify.lastStatus())
		}
		if n := f.logged("not watching files"); n != 1 {
			t.Fatalf("the missing watcher was logged %d times", n)
		}
	})
}

// TestDaemonBoundedAPITrafficWhileIdle: a day with nothing due makes no
// request at all: acceptance is checked when it matters, never polled.
func TestDaemonBoundedAPITrafficWhileIdle(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		checks := 0
		inner := f.identity
		f.identity = func(rc *rest.Config) error { checks++; return inner(rc) }
		f.start()
		before, actions := checks, len(f.client.Actions())
		f.advance(12 * time.Hour)
		for range 3 {
			f.fileEvent() // the agent's own and others' writes nearby
		}
		if checks != before || len(f.client.Actions()) != actions {
			t.Fatalf("idle for 12 h: %d identity checks and %d API calls", checks-before, len(f.client.Actions())-actions)
		}
	})
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
