//go:build failpoints

package sim

import (
	"sync/atomic"
	"time"

	"k8s.io/utils/clock"

	"github.com/certagent/certagent/internal/clocktest"
)

// Time in the simulation runs inside a testing/synctest bubble: the bubble's
// clock is the node's monotonic clock (it stops while the node is
// suspended). The control plane lives on true time: the bubble's time plus
// every suspend so far. The node's wall clock is true time plus its error
// (NTP steps move it both ways).
type simClock struct {
	start     time.Time    // the bubble's time when the world began
	trueStart time.Time    // true time then
	suspended atomic.Int64 // nanoseconds the node slept in all
	skew      atomic.Int64 // the node's wall clock minus true time
}

// trueNow is the control plane's time.
func (c *simClock) trueNow() time.Time {
	return c.trueStart.Add(time.Since(c.start) + time.Duration(c.suspended.Load()))
}

// Now is the node's time.Now: its wall clock with a monotonic reading that
// does not advance during a suspend.
func (c *simClock) Now() time.Time {
	wall := c.trueNow().Add(time.Duration(c.skew.Load()))
	return clocktest.WithMonotonic(wall, time.Since(c.start))
}

func (c *simClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }
func (c *simClock) After(d time.Duration) <-chan time.Time {
	return time.After(d)
}
func (c *simClock) NewTimer(d time.Duration) clock.Timer { return realTimer{time.NewTimer(d)} }
func (c *simClock) Sleep(d time.Duration)                { time.Sleep(d) }
func (c *simClock) Tick(d time.Duration) <-chan time.Time {
	return time.Tick(d)
}
func (c *simClock) NewTicker(d time.Duration) clock.Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// simJumps stands in for the agent's rotate.JumpDetector, whose own test
// (rotate.TestJumpDetector) proves it notices a jump within a minute: a
// ticker every minute would cost the simulation half a million wakeups a
// year. The world announces each jump after a random delay under a minute.
type simJumps struct{ ch atomic.Pointer[chan struct{}] }

func newSimJumps() *simJumps {
	j := &simJumps{}
	ch := make(chan struct{})
	j.ch.Store(&ch)
	return j
}

func (j *simJumps) Changed() <-chan struct{} { return *j.ch.Load() }

func (j *simJumps) broadcast() {
	ch := make(chan struct{})
	old := j.ch.Swap(&ch)
	close(*old)
}
