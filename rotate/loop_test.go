package rotate

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/certagent/certagent/internal/clocktest"
)

// fakeTask issues certificates of a fixed lifetime on the test clock and can
// be told to fail.
type fakeTask struct {
	clk      *clocktest.Clock
	lifetime time.Duration

	mu      sync.Mutex
	cur     Cert
	steps   int
	renews  int
	serial  int
	failing error // returned by renewing steps while set
}

func (f *fakeTask) Step(ctx context.Context, renew bool) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps++
	now := f.clk.Now().Round(0)
	if f.cur.Known() && !renew && now.Before(f.cur.NotAfter) {
		return Result{Cert: f.cur}, nil
	}
	if f.failing != nil {
		return Result{Cert: f.cur}, f.failing
	}
	f.renews++
	f.serial++
	f.cur = Cert{NotBefore: now, NotAfter: now.Add(f.lifetime), StoredAt: now, Serial: []byte(fmt.Sprint(f.serial))}
	return Result{Cert: f.cur, Stored: true}, nil
}

func (f *fakeTask) counts() (steps, renews int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.steps, f.renews
}

var (
	errDenied   = errors.New("denied")
	errDiskFull = errors.New("no space left on device")
)

func classifyFake(err error) Class {
	switch {
	case err == nil:
		return Done
	case errors.Is(err, errDenied):
		return NeedsPerson
	case errors.Is(err, errDiskFull):
		return NodeFault
	}
	return Transient
}

// loopEnv runs a Loop with a JumpDetector on a test clock inside a synctest
// bubble; step moves the monotonic clock and lets everything settle.
type loopEnv struct {
	clk  *clocktest.Clock
	task *fakeTask
	loop *Loop
	outs []Outcome
	at   []time.Time // wall time of each outcome
	mu   sync.Mutex
}

func newLoopEnv(t *testing.T, ctx context.Context, lifetime time.Duration, mutate func(*LoopConfig)) *loopEnv {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	e := &loopEnv{clk: clk, task: &fakeTask{clk: clk, lifetime: lifetime}}
	jd := NewJumpDetector(clk, nil)
	cfg := LoopConfig{Task: e.task, Classify: classifyFake, Clock: clk, Jumps: jd, Rand: func() float64 { return 0 },
		Observe: func(o Outcome) {
			e.mu.Lock()
			e.outs, e.at = append(e.outs, o), append(e.at, clk.Now().Round(0))
			e.mu.Unlock()
		}}
	if mutate != nil {
		mutate(&cfg)
	}
	l, err := NewLoop(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.loop = l
	go jd.Run(ctx)
	go l.Run(ctx)
	synctest.Wait()
	return e
}

// advance moves the monotonic clock by d in steps of at most a minute.
func (e *loopEnv) advance(d time.Duration) {
	for d > 0 {
		s := min(d, time.Minute)
		e.clk.Step(s)
		synctest.Wait()
		d -= s
	}
}

func TestLoopRenewsAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		e := newLoopEnv(t, ctx, 24*time.Hour, func(c *LoopConfig) { c.Policy = func() Policy { return Policy{RenewBefore: time.Hour} } })
		if _, renews := e.task.counts(); renews != 1 {
			t.Fatalf("%d certificates after start, want 1", renews)
		}
		e.advance(23*time.Hour - time.Minute)
		if _, renews := e.task.counts(); renews != 1 {
			t.Fatalf("renewed before the deadline")
		}
		e.advance(2 * time.Minute)
		if _, renews := e.task.counts(); renews != 2 {
			t.Fatalf("%d certificates a minute after the deadline, want 2", renews)
		}
	})
}

// TestLoopRenewsWithinAMinuteOfResume: the machine sleeps past the deadline.
// Go's timers (monotonic) stood still; the loop must renew within a minute of
// waking by the wall clock, not 23 h later when its timer fires.
func TestLoopRenewsWithinAMinuteOfResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		e := newLoopEnv(t, ctx, 24*time.Hour, func(c *LoopConfig) { c.Policy = func() Policy { return Policy{RenewBefore: time.Hour} } })
		e.advance(time.Hour)
		e.clk.Suspend(30 * time.Hour) // past the deadline and past NotAfter
		synctest.Wait()
		e.advance(time.Minute)
		if _, renews := e.task.counts(); renews != 2 {
			t.Fatalf("%d certificates a minute after resuming past the deadline, want 2", renews)
		}
	})
}

// TestLoopClockStepBackDoesNotRenewEarly: an NTP step back leaves the
// monotonic timer early by the wall clock's measure. Whether or not the jump
// detector has announced the step yet (it looks once a minute, so a step
// just before the timer fires is not announced), the loop does nothing
// before the wall-clock deadline: when its timer fires it re-checks the wall
// clock and sleeps on, without a step; at the deadline it renews.
func TestLoopClockStepBackDoesNotRenewEarly(t *testing.T) {
	for _, tc := range []struct {
		name      string
		announced bool
	}{
		{"announced by the jump detector", true},
		{"not yet announced when the timer fires", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				e := newLoopEnv(t, ctx, 24*time.Hour, func(c *LoopConfig) {
					c.Policy = func() Policy { return Policy{RenewBefore: time.Hour} }
					if !tc.announced {
						c.Jumps = nil
					}
				})
				deadline := e.clk.Now().Round(0).Add(23 * time.Hour)
				e.clk.JumpWall(-2 * time.Hour)
				e.advance(23*time.Hour + time.Minute) // the first timer's time has passed; the wall clock is 2 h short
				// A loop that trusted its timer would step here: finding
				// nothing due, it would not renew, but it would do a step's
				// work (and, in a back-off, an attempt) before its time.
				if steps, renews := e.task.counts(); steps != 1 || renews != 1 {
					t.Fatalf("%d steps (%d renewals) before the wall-clock deadline, want none", steps-1, renews-1)
				}
				e.advance(2*time.Hour + time.Minute)
				if steps, renews := e.task.counts(); steps != 3 || renews != 2 {
					t.Fatalf("by the wall-clock deadline: %d steps, %d certificates; want the step that found it due and the renewal", steps, renews)
				}
				e.mu.Lock()
				defer e.mu.Unlock()
				if at := e.at[len(e.at)-1]; at.Before(deadline) || at.After(deadline.Add(time.Minute)) {
					t.Fatalf("renewed at %s, want within a minute after the wall-clock deadline %s", at, deadline)
				}
			})
		})
	}
}

// TestLoopNoStormWhateverThePolicy: renewBefore longer than the lifetime (a
// mistake, or a signer that issues shorter certificates than asked) must not
// make the loop renew again at once: 215 CSRs in 20 s were seen from one
// node before the fix. With the clock standing still, one renewal.
func TestLoopNoStormWhateverThePolicy(t *testing.T) {
	for _, rb := range []time.Duration{10 * time.Minute, 20 * time.Minute, 48 * time.Hour} {
		t.Run(rb.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				e := newLoopEnv(t, ctx, 10*time.Minute, func(c *LoopConfig) { c.Policy = func() Policy { return Policy{RenewBefore: rb} } })
				time.Sleep(time.Hour) // bubble time only; the test clock stands still
				synctest.Wait()
				if _, renews := e.task.counts(); renews != 1 {
					t.Fatalf("%d certificates with the clock standing still", renews)
				}
				// Over a simulated day of 10-minute certificates: at most one
				// renewal a minute (MinGapFloor), and in fact the 70-90 %% default.
				e.advance(24 * time.Hour)
				if _, renews := e.task.counts(); renews > 24*60/7+2 {
					t.Fatalf("%d renewals of 10-minute certificates in a day", renews)
				}
			})
		})
	}
}

// TestLoopBackoffNeverPassesExpiry: a renewal denied again and again backs
// off towards an hour, but each wait is capped by the time the certificate
// has left, so attempts continue until it expires.
func TestLoopBackoffNeverPassesExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		e := newLoopEnv(t, ctx, 3*time.Hour, nil)
		e.task.mu.Lock()
		e.task.failing = errDenied
		notAfter := e.task.cur.NotAfter
		e.task.mu.Unlock()
		e.advance(3 * time.Hour)
		e.mu.Lock()
		defer e.mu.Unlock()
		var attempts []time.Time
		for i, o := range e.outs {
			if o.Class == NeedsPerson && e.at[i].Before(notAfter) {
				if o.Next.After(notAfter) {
					t.Errorf("after failure %d the next attempt is at %s, past NotAfter %s", o.Failure, o.Next, notAfter)
				}
				attempts = append(attempts, o.Next)
			}
		}
		if len(attempts) < 4 {
			t.Fatalf("only %d failed attempts before expiry: %v", len(attempts), attempts)
		}
		last := attempts[len(attempts)-1]
		if left := notAfter.Sub(last); left > 2*time.Minute {
			t.Fatalf("the last attempt before expiry was %s before it", left)
		}
	})
}

// TestLoopRetriesANodeFaultWithinAMinute: a renewal that fails because the
// node's disk is full is retried every 45 s at most (whatever the jitter
// draws: the lowest, the middle and the highest), for hours, without a
// person: once space is freed, at a moment nothing announces, the
// certificate is renewed within a minute. The clock moves a second at a
// time, so the times measured are the loop's own.
func TestLoopRetriesANodeFaultWithinAMinute(t *testing.T) {
	for _, draw := range []float64{0, 0.5, 0.999999} {
		t.Run(fmt.Sprint("draw ", draw), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				e := newLoopEnv(t, ctx, 24*time.Hour, func(c *LoopConfig) {
					c.Policy = func() Policy { return Policy{RenewBefore: 20 * time.Hour} } // due after 4 h
					c.Rand = func() float64 { return draw }
				})
				e.task.mu.Lock()
				e.task.failing = errDiskFull
				e.task.mu.Unlock()
				seconds := func(d time.Duration) {
					for range int(d / time.Second) {
						e.clk.Step(time.Second)
						synctest.Wait()
					}
				}
				seconds(4*time.Hour + 3*time.Hour + 17*time.Second) // due after 4 h, then 3 h of a full disk
				e.mu.Lock()
				var attempts []time.Time
				for i, o := range e.outs {
					if o.Class == NodeFault {
						attempts = append(attempts, e.at[i])
					}
				}
				e.mu.Unlock()
				if n := len(attempts); n < int(3*time.Hour/(45*time.Second)) || n > int(3*time.Hour/time.Second) {
					t.Fatalf("%d failed attempts in 3 hours of a full disk, want one every 45 s at most", n)
				}
				for i := 1; i < len(attempts); i++ {
					if gap := attempts[i].Sub(attempts[i-1]); gap > 45*time.Second {
						t.Fatalf("attempts %d and %d of a full disk %s apart, want 45 s at most", i, i+1, gap)
					}
				}
				if _, renews := e.task.counts(); renews != 1 {
					t.Fatalf("%d certificates while the disk was full", renews)
				}
				freed := e.clk.Now().Round(0)
				e.task.mu.Lock()
				e.task.failing = nil // space freed; nothing tells the loop
				e.task.mu.Unlock()
				seconds(time.Minute)
				if _, renews := e.task.counts(); renews != 2 {
					t.Fatalf("not renewed within a minute after space was freed (last attempt %s before)", freed.Sub(attempts[len(attempts)-1]))
				}
				e.mu.Lock()
				defer e.mu.Unlock()
				t.Logf("%d attempts in 3 hours; renewed %s after space was freed", len(attempts), e.at[len(e.at)-1].Sub(freed))
			})
		})
	}
}

// TestLoopBackoffIgnoresKicksWithoutInputChange: during a back-off the
// agent's own writes (file events) must not trigger a retry; a person
// dropping a new file (the inputs change) or forcing does.
func TestLoopBackoffIgnoresKicksWithoutInputChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		inputs := "a"
		var imu sync.Mutex
		e := newLoopEnv(t, ctx, time.Hour, func(c *LoopConfig) {
			c.Inputs = func() string { imu.Lock(); defer imu.Unlock(); return inputs }
		})
		e.task.mu.Lock()
		e.task.failing = errDenied
		e.task.mu.Unlock()
		e.advance(55 * time.Minute) // past the 70-90 % deadline: the renewal fails, back-off 5 m
		steps, _ := e.task.counts()
		for range 5 {
			e.loop.Kick()
			synctest.Wait()
		}
		if s, _ := e.task.counts(); s != steps {
			t.Fatalf("%d steps from kicks during a back-off with nothing changed", s-steps)
		}
		imu.Lock()
		inputs = "b"
		imu.Unlock()
		e.loop.Kick()
		synctest.Wait()
		if s, _ := e.task.counts(); s != steps+1 {
			t.Fatalf("a kick with changed inputs made %d steps, want 1", s-steps)
		}
	})
}

// TestLoopRequest: a forced request renews at once, even within MinGap of
// the last renewal; an unforced one renews only what is due.
func TestLoopRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		e := newLoopEnv(t, ctx, 24*time.Hour, nil)
		if o := <-e.loop.Request(ctx, false); o.Stored || o.Err != nil {
			t.Fatalf("unforced request on a fresh certificate: %+v", o)
		}
		o := <-e.loop.Request(ctx, true)
		if !o.Stored || !o.Forced {
			t.Fatalf("forced request did not renew: %+v", o)
		}
		if _, renews := e.task.counts(); renews != 2 {
			t.Fatalf("%d certificates, want 2", renews)
		}
		if !o.Next.After(e.clk.Now().Round(0)) {
			t.Fatalf("after a forced renewal the next one is due at once: %s", o.Next)
		}
	})
}

// TestLoopHonoursRetryAfter: a 429 with Retry-After waits at least as long
// as the server asked, even when the back-off would be shorter, drawn from
// [1, 1.5) of it (here the largest draw: 50 % more).
func TestLoopHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errBusy := errors.New("429")
		e := newLoopEnv(t, ctx, 24*time.Hour, func(c *LoopConfig) {
			c.RetryAfter = func(err error) time.Duration {
				if errors.Is(err, errBusy) {
					return 40 * time.Second
				}
				return 0
			}
			c.Rand = func() float64 { return 0.999 }
		})
		e.task.mu.Lock()
		e.task.failing = errBusy
		e.task.mu.Unlock()
		<-e.loop.Request(ctx, true)
		synctest.Wait()
		e.mu.Lock()
		last := e.outs[len(e.outs)-1]
		e.mu.Unlock()
		if wait := last.Next.Sub(e.clk.Now().Round(0)); wait < 59*time.Second || wait > 60*time.Second {
			t.Fatalf("retry in %s after Retry-After: 40 with the largest jitter, want 59–60 s", wait)
		}
	})
}

// TestJumpDetector: a suspend or a clock step is announced within a minute;
// slewing is not.
func TestJumpDetector(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		var jumps []time.Duration
		d := NewJumpDetector(clk, func(j time.Duration) { jumps = append(jumps, j) })
		go d.Run(ctx)
		synctest.Wait()
		ch := d.Changed()
		clk.Step(time.Minute)
		clk.JumpWall(200 * time.Millisecond) // slewing-sized: not a jump
		clk.Step(time.Minute)
		synctest.Wait()
		select {
		case <-ch:
			t.Fatal("a 200 ms drift counted as a jump")
		default:
		}
		clk.Suspend(8 * time.Hour)
		clk.Step(time.Minute)
		synctest.Wait()
		select {
		case <-ch:
		default:
			t.Fatal("an 8 h suspend was not announced a minute after resuming")
		}
		if len(jumps) != 1 || jumps[0] < 8*time.Hour {
			t.Fatalf("jumps %v", jumps)
		}
	})
}
