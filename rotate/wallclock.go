package rotate

import (
	"context"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

// Go's timers run on the monotonic clock, which stands still while a machine
// is suspended (and ignores NTP steps), whereas certificates expire by the
// wall clock. Deadlines are therefore wall times, and a JumpDetector compares
// the two clocks every minute: when they drift apart, every sleeper re-checks
// its deadline against the wall clock. A machine that slept past a deadline
// renews within a minute of waking, without a minute-by-minute poll in every
// loop.

// Jumps announces wall-clock jumps.
type Jumps interface {
	// Changed returns a channel that is closed at the next jump.
	Changed() <-chan struct{}
}

// JumpCheckInterval is how often a JumpDetector compares the clocks.
const JumpCheckInterval = time.Minute

// jumpThreshold is the drift that counts as a jump; NTP slewing (at most
// 500 ppm, 30 ms a minute) stays far below it.
const jumpThreshold = time.Second

// JumpDetector notices suspends and clock steps.
type JumpDetector struct {
	clk    clock.WithTicker
	onJump func(time.Duration)

	mu sync.Mutex
	ch chan struct{}
}

// NewJumpDetector watches clk; onJump (may be nil) hears each jump's size
// (positive: the wall clock went forward).
func NewJumpDetector(clk clock.WithTicker, onJump func(time.Duration)) *JumpDetector {
	return &JumpDetector{clk: clk, onJump: onJump, ch: make(chan struct{})}
}

// Changed implements Jumps.
func (d *JumpDetector) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// Run compares the clocks every JumpCheckInterval until ctx ends.
func (d *JumpDetector) Run(ctx context.Context) {
	t := d.clk.NewTicker(JumpCheckInterval)
	defer t.Stop()
	prev := d.clk.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		now := d.clk.Now()
		jump := now.Round(0).Sub(prev.Round(0)) - now.Sub(prev) // wall minus monotonic
		prev = now
		if jump > jumpThreshold || jump < -jumpThreshold {
			if d.onJump != nil {
				d.onJump(jump)
			}
			d.Broadcast()
		}
	}
}

// Broadcast wakes every sleeper to re-check the wall clock.
func (d *JumpDetector) Broadcast() {
	d.mu.Lock()
	close(d.ch)
	d.ch = make(chan struct{})
	d.mu.Unlock()
}

// noJumps is for callers without a detector.
type noJumps struct{}

func (noJumps) Changed() <-chan struct{} { return nil }

// WallUntil is how long from now until wake by the wall clock, ignoring
// monotonic readings (which a suspend leaves behind).
func WallUntil(now, wake time.Time) time.Duration {
	return wake.Round(0).Sub(now.Round(0))
}
