package rotate

import (
	"context"
	"errors"
	"time"

	"k8s.io/utils/clock"
)

// Class is how a Loop treats the outcome of a step.
type Class int

const (
	// Done: a usable certificate is in place.
	Done Class = iota
	// Blocked: nothing to do until an input changes (no credentials yet, or
	// the serving certificate waits for the client one). Not a failure.
	Blocked
	// Transient: worth retrying soon (API server unreachable, overloaded,
	// restarting): DefaultBackoff.
	Transient
	// NeedsPerson: a denied CSR, a rejected token, a refused certificate:
	// PermanentBackoff.
	NeedsPerson
	// NodeFault: the node itself failed the step (its disk full, over quota,
	// read-only or failing; no file descriptor left), which clears without
	// anyone telling the loop: NodeFaultBackoff, so that the step succeeds
	// within a minute of the node's recovery.
	NodeFault
)

// Task obtains one certificate. Step makes sure a usable certificate is
// stored, obtaining one if there is none, and obtains a new one even so when
// renew is set. It reports the certificate in place afterwards (also when it
// fails, if an older one is still there).
type Task interface {
	Step(ctx context.Context, renew bool) (Result, error)
}

// Result is what a step left on disk.
type Result struct {
	Cert Cert
	// Stored: this step completed storing a new certificate.
	Stored bool
}

// Outcome is a step's result as the loop saw it.
type Outcome struct {
	Result
	Err     error
	Class   Class
	Renew   bool      // the step was asked to renew
	Forced  bool      // by a person (Force)
	Next    time.Time // when the loop acts again on its own (wall clock)
	Failure int       // consecutive failures, 0 after a success
}

// LoopConfig configures a Loop. Task, Classify and Clock are required.
type LoopConfig struct {
	Task Task
	// Policy is read at every decision, so a reload takes effect at once.
	Policy func() Policy
	// Classify sorts a step's error (nil is Done).
	Classify func(error) Class
	// RetryAfter is the wait the server asked for with err (429 Retry-After), 0 if none.
	RetryAfter func(error) time.Duration
	Clock      clock.WithTicker
	// Jumps wakes sleepers after a suspend or a clock step; nil: none.
	Jumps Jumps
	// Rand returns uniform numbers in [0, 1) for back-off jitter.
	Rand func() float64
	// Poll is how often a Blocked step is retried even without a kick, on
	// average: each wait is drawn from [0.5, 1.5) of it (PollDelay; default
	// 5 minutes).
	Poll time.Duration
	// Inputs fingerprints the files a person may drop or replace: during a
	// back-off, only a kick that comes with a change of them (or Force) cuts
	// the wait short, so the agent's own writes do not turn a denial into a
	// storm. Nil: kicks never cut a back-off short.
	Inputs func() string
	// Observe hears every outcome (status, metrics, kicking other loops).
	Observe func(Outcome)
	// Live records the loop's phase for the watchdog; may be nil.
	Live *Liveness
}

// Loop keeps one certificate valid: it steps, then sleeps until the renewal
// deadline (the wall clock's), the end of a back-off, a kick or a Request.
type Loop struct {
	cfg      LoopConfig
	kick     chan struct{}
	requests chan request
}

// request asks for a step now and for its outcome.
type request struct {
	force bool
	reply chan Outcome
}

// NewLoop checks cfg and fills in defaults.
func NewLoop(cfg LoopConfig) (*Loop, error) {
	switch {
	case cfg.Task == nil || cfg.Classify == nil || cfg.Clock == nil:
		return nil, errors.New("rotate: Task, Classify and Clock are required")
	}
	if cfg.Policy == nil {
		cfg.Policy = func() Policy { return Policy{} }
	}
	if cfg.RetryAfter == nil {
		cfg.RetryAfter = func(error) time.Duration { return 0 }
	}
	if cfg.Rand == nil {
		cfg.Rand = func() float64 { return 0.5 }
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Minute
	}
	if cfg.Observe == nil {
		cfg.Observe = func(Outcome) {}
	}
	if cfg.Live == nil {
		cfg.Live = &Liveness{}
	}
	return &Loop{cfg: cfg, kick: make(chan struct{}, 1), requests: make(chan request, 4)}, nil
}

// Kick asks the loop to look again (a file changed). Kicks coalesce.
func (l *Loop) Kick() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Request asks the loop to step now and returns the channel that receives
// the outcome of that step. With force the step renews even if the
// certificate is not due and within MinGap of the last renewal (a person
// asked); without, it renews only what is due.
func (l *Loop) Request(ctx context.Context, force bool) <-chan Outcome {
	reply := make(chan Outcome, 1)
	select {
	case l.requests <- request{force: force, reply: reply}:
	case <-ctx.Done(): // the loop is gone or the caller gave up
		reply <- Outcome{Err: ctx.Err(), Class: Transient, Forced: force}
	}
	return reply
}

// loopState is what Run carries from one step to the next.
type loopState struct {
	cur        Cert      // the certificate in place, as last reported
	lastStored time.Time // when this process last stored or renewed it
	failures   int
	due        bool // the last step found the certificate due: renew next
}

// Run steps and sleeps until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	c := l.cfg
	var st loopState
	var pending []request
	for ctx.Err() == nil {
		forced := false
		for _, r := range pending {
			forced = forced || r.force
		}
		renew := forced || st.due
		c.Live.Set(Busy, c.Clock.Now())
		res, err := c.Task.Step(ctx, renew)
		if ctx.Err() != nil {
			for _, r := range pending {
				r.reply <- Outcome{Result: res, Err: ctx.Err(), Class: Transient, Renew: renew, Forced: forced}
			}
			return
		}
		now := c.Clock.Now()
		if res.Cert.Known() {
			st.cur = res.Cert
		}
		if res.Stored || (renew && err == nil) {
			st.lastStored = now
		}
		out := Outcome{Result: res, Err: err, Class: c.Classify(err), Renew: renew, Forced: forced}
		interrupt := l.next(&st, &out, now)
		c.Observe(out)
		if st.due && out.Class == Done {
			continue // renew right away; whoever asked hears of that step
		}
		for _, r := range pending {
			r.reply <- out
		}
		c.Live.Set(Idle, c.Clock.Now())
		pending = l.sleep(ctx, out.Next, interrupt)
	}
}

// next decides, from the class of the step that ended at now, when the loop
// steps again (out.Next) and whether it renews then (st.due), counts the
// failures, and returns what a kick must show to cut the wait short: any
// kick while waiting for a deadline or a file, a change of the inputs while
// backing off after a failure.
func (l *Loop) next(st *loopState, out *Outcome, now time.Time) (interrupt func() bool) {
	c := l.cfg
	interrupt = func() bool { return true }
	st.due = false
	switch out.Class {
	case Done:
		st.failures = 0
		known := st.cur
		if st.lastStored.After(known.StoredAt) {
			known.StoredAt = st.lastStored.Round(0)
		}
		out.Next = c.Policy().NextRenewal(known)
		if WallUntil(now, out.Next) <= 0 {
			st.due = true // found due: renew right away
		}
	case Blocked:
		st.failures = 0
		out.Next = now.Add(PollDelay(c.Poll, c.Rand())).Round(0)
	default:
		st.failures++
		b := DefaultBackoff
		switch out.Class {
		case NeedsPerson:
			b = PermanentBackoff
		case NodeFault:
			b = NodeFaultBackoff
		}
		delay := b.After(st.failures, c.RetryAfter(out.Err), c.Rand())
		delay = CapToExpiry(delay, now.Round(0), st.cur.NotAfter)
		out.Next = now.Add(delay).Round(0)
		st.due = out.Renew && !out.Forced && !out.Stored // retry the renewal, not a person's one-off
		if c.Inputs != nil {
			before := c.Inputs()
			interrupt = func() bool { return c.Inputs() != before }
		} else {
			interrupt = func() bool { return false }
		}
	}
	out.Failure = st.failures
	return interrupt
}

// sleep waits for the wall clock to reach wake, a kick that interrupt
// accepts, or a Request (returned, with any others queued).
func (l *Loop) sleep(ctx context.Context, wake time.Time, interrupt func() bool) []request {
	c := l.cfg
	jumps := c.Jumps
	if jumps == nil {
		jumps = noJumps{}
	}
	for {
		jumped := jumps.Changed()
		d := WallUntil(c.Clock.Now(), wake)
		if d <= 0 {
			return nil
		}
		t := c.Clock.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case r := <-l.requests:
			t.Stop()
			return append([]request{r}, l.drainRequests()...)
		case <-l.kick:
			t.Stop()
			if interrupt() {
				return nil
			}
		case <-jumped:
			t.Stop()
		case <-t.C():
		}
	}
}

func (l *Loop) drainRequests() []request {
	var out []request
	for {
		select {
		case r := <-l.requests:
			out = append(out, r)
		default:
			return out
		}
	}
}
