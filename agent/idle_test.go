package agent

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/agent/observe/observetest"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
)

func TestSettlerRunsOnceAfterABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var runs atomic.Int32
		s := &settler{delay: settleDelay, fn: func() { runs.Add(1) }}
		for range 5 { // a bootstrap: steps a second apart
			s.settled()
			time.Sleep(time.Second)
		}
		if n := runs.Load(); n != 0 {
			t.Fatalf("%d runs during the burst, want none", n)
		}
		time.Sleep(settleDelay)
		synctest.Wait()
		if n := runs.Load(); n != 1 {
			t.Fatalf("%d runs after the burst, want 1", n)
		}
		s.settled()
		s.stop()
		time.Sleep(2 * settleDelay)
		synctest.Wait()
		if n := runs.Load(); n != 1 {
			t.Errorf("a stopped settler ran: %d runs", n)
		}
	})
	var none *settler // the agent outside the daemon has none
	none.settled()
	none.stop()
}

// TestDaemonClosesIdleConnectionsOnceSettled: a bootstrap (client and
// serving certificate, steps in a burst) is followed by one closing of the
// idle connections once the daemon has nothing to do; a renewal by another;
// a quiet day by none.
func TestDaemonClosesIdleConnectionsOnceSettled(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		var closes atomic.Int32
		f.opts.CloseIdle = func(*bootstrap.Bootstrapper) { closes.Add(1) }
		f.start()
		if f.clientCSRs() != 1 || f.servingCSRs() != 1 {
			t.Fatalf("after start: %d client and %d serving CSRs, want 1 and 1", f.clientCSRs(), f.servingCSRs())
		}
		time.Sleep(settleDelay) // bubble time: the settler's timer
		synctest.Wait()
		if n := closes.Load(); n != 1 {
			t.Fatalf("%d closings after the bootstrap, want 1", n)
		}
		f.advance(22*time.Hour + 50*time.Minute) // before the deadline: nothing happens
		time.Sleep(settleDelay)
		synctest.Wait()
		if n := closes.Load(); n != 1 {
			t.Fatalf("%d closings while idle, want still 1", n)
		}
		f.advance(20 * time.Minute) // both renewed
		time.Sleep(settleDelay)
		synctest.Wait()
		if f.clientCSRs() != 2 || f.servingCSRs() != 2 {
			t.Fatalf("%d client and %d serving CSRs, want 2 and 2", f.clientCSRs(), f.servingCSRs())
		}
		if n := closes.Load(); n < 2 || n > 3 {
			t.Fatalf("%d closings after the renewals, want 2 or 3 (one per burst)", n)
		}
	})
}

// TestDaemonClosesIdleConnectionsAfterALateEvent: a serving CSR nobody
// approves gets its ServingCSRPending Event 15 s after the burst, with a
// connection of its own; the daemon closes it again after the Event.
func TestDaemonClosesIdleConnectionsAfterALateEvent(t *testing.T) {
	sink := &observetest.Events{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		var closes atomic.Int32
		f.opts.CloseIdle = func(*bootstrap.Bootstrapper) { closes.Add(1) }
		f.eventsTo(func(*rest.Config) (apiclient.EventClient, error) { return sink, nil })
		f.pending.Store(true)
		f.start()
		time.Sleep(settleDelay)
		synctest.Wait()
		if n := closes.Load(); n != 1 {
			t.Fatalf("%d closings while the serving CSR waits, want 1", n)
		}
		f.advanceIn(observe.ServingPendingAfter, time.Second)
		if sink.Find(observe.ReasonServingCSRPending) == nil {
			t.Fatalf("no %s Event; got %v", observe.ReasonServingCSRPending, sink.Reasons())
		}
		time.Sleep(settleDelay)
		synctest.Wait()
		if n := closes.Load(); n != 2 {
			t.Fatalf("%d closings after the late Event, want 2", n)
		}
	})
}
