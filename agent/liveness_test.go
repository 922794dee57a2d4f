package agent

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
)

// watchdogs counts WATCHDOG=1 messages while the clock moves by d.
func watchdogs(f *daemonFixture, d time.Duration) int {
	before := f.notify.count("WATCHDOG=1")
	f.advanceIn(d, 10*time.Second)
	return f.notify.count("WATCHDOG=1") - before
}

// TestWatchdogFollowsTheWorkers: WATCHDOG=1 keeps coming while the workers
// sleep or wait for a person to approve (for hours), and stops when a worker
// is stuck in a step (here a CSR create that never returns), so systemd
// restarts the agent; /healthz says which worker is stuck.
func TestWatchdogFollowsTheWorkers(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.notify.watchdog = 20 * time.Second
		f.pending.Store(true) // nobody approves serving CSRs
		f.start()
		if n := watchdogs(f, 2*time.Hour); n < 2*3600/10-2 {
			t.Fatalf("%d WATCHDOG=1 in 2 h while the serving CSR waits for approval, want one every 10 s", n)
		}
		if code, _ := probe(f.agent, "/healthz"); code != 200 {
			t.Fatalf("/healthz = %d while waiting for approval", code)
		}

		// The client renewal hangs in its create call.
		hang := make(chan struct{})
		defer close(hang)
		f.client.PrependReactor("create", "certificatesigningrequests", func(k8stesting.Action) (bool, runtime.Object, error) {
			<-hang
			return true, nil, errors.New("released")
		})
		go func() { <-f.agent.loops[bootstrap.Client].loop.Request(t.Context(), true) }()
		synctest.Wait()
		if n := watchdogs(f, hungAfter-time.Minute); n < int((hungAfter-time.Minute)/(10*time.Second))-2 {
			t.Fatalf("%d WATCHDOG=1 while the worker was busy for less than %s", n, hungAfter)
		}
		if n := watchdogs(f, 2*time.Minute); n > 6 {
			t.Fatalf("%d WATCHDOG=1 after the worker was stuck for %s", n, hungAfter)
		}
		if n := watchdogs(f, time.Minute); n != 0 {
			t.Fatalf("%d WATCHDOG=1 while the worker stays stuck", n)
		}
		if f.logged("a worker is stuck") != 1 {
			t.Fatal("the stuck worker was not logged once")
		}
		if code, body := probe(f.agent, "/healthz"); code != 503 || !strings.Contains(body, "the client worker has been busy for") {
			t.Fatalf("/healthz = %d %q", code, body)
		}
	})
}

// TestMetricsAreWrittenOutsideTheLock: a scraper that reads slowly must not
// hold up the agent.
func TestMetricsAreWrittenOutsideTheLock(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.start()
		w := &stuckWriter{ResponseRecorder: httptest.NewRecorder(), release: make(chan struct{})}
		done := make(chan struct{})
		go func() {
			f.agent.handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
			close(done)
		}()
		synctest.Wait() // the handler is blocked writing
		f.agent.publishStatus()
		_ = f.agent.statusLine() // would deadlock if the handler held a.mu
		close(w.release)
		<-done
		if !strings.Contains(w.Body.String(), "certagent_ready 1") {
			t.Fatalf("metrics:\n%s", w.Body.String())
		}
	})
}

type stuckWriter struct {
	*httptest.ResponseRecorder
	release chan struct{}
}

func (s *stuckWriter) Write(b []byte) (int, error) {
	<-s.release
	return s.ResponseRecorder.Write(b)
}

// TestReloadWhileWorking (run with -race): reloads replace the policy and
// the bootstrapper while the workers read them.
func TestReloadWhileWorking(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		n := 0
		f.load = func() (config.Config, error) {
			c := f.cfg
			n++
			c.Rotation.RenewBefore = config.Duration{Duration: time.Duration(n) * time.Minute}
			c.Serving.DNSNames = []string{"a.example"}
			return c, nil
		}
		f.start()
		for range 20 {
			f.reload <- struct{}{}
			f.fileEvent()
			f.advance(time.Minute)
		}
		if got := f.agent.renewalPolicy().RenewBefore; got != 20*time.Minute {
			t.Fatalf("renewBefore %s after 20 reloads", got)
		}
	})
}

// TestOneWriterPerCertDir: while one certagent holds the directory, another
// cannot take it, and learns who holds it.
func TestOneWriterPerCertDir(t *testing.T) {
	dir := t.TempDir()
	l, err := tryLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tryLock(dir); !errors.Is(err, errLocked) || !strings.Contains(err.Error(), "pid ") {
		t.Fatalf("second lock: %v", err)
	}
	l.Release()
	l2, err := tryLock(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Release()
}

// TestDaemonWaitsForTheLock: a second daemon on the same directory waits
// (and says so) until the first is gone; then it works.
func TestDaemonWaitsForTheLock(t *testing.T) {
	daemonTest(t, func(c *config.Config) { c.Serving.Enabled = new(bool) }, func(t *testing.T, f *daemonFixture) {
		if err := bootstrap.EnsureCertDir(f.cfg.CertDir); err != nil {
			t.Fatal(err)
		}
		other, err := tryLock(f.cfg.CertDir)
		if err != nil {
			t.Fatal(err)
		}
		f.start()
		if f.clientCSRs() != 0 || !strings.HasPrefix(f.notify.lastStatus(), "waiting: another certagent is writing to the certificate directory") {
			t.Fatalf("with the lock held elsewhere: %d CSRs, STATUS %q", f.clientCSRs(), f.notify.lastStatus())
		}
		other.Release()
		f.advance(5 * time.Second)
		if f.clientCSRs() != 1 {
			t.Fatalf("%d CSRs after the lock was released", f.clientCSRs())
		}
	})
}
