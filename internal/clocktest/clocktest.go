// Package clocktest is a fake clock for tests that behaves like the real one
// across a suspend or a clock step: its Now carries a monotonic reading, as
// time.Now does, and the wall time can jump while the monotonic time does not.
// Timers run on the monotonic time, as Go's runtime timers do.
//
// k8s.io/utils/clock/testing's FakeClock cannot show the difference: stepping
// it moves both readings together, so code that measures a wall-clock
// deadline with the monotonic clock passes its tests and then renews late by
// the length of every suspend on a real machine.
//
// It is test support: nothing in the node or cluster binaries imports it.
package clocktest

import (
	"fmt"
	"sync"
	"time"
	"unsafe"

	clocktesting "k8s.io/utils/clock/testing"
)

// Clock is a fake clock.WithTicker with separate wall and monotonic readings.
type Clock struct {
	*clocktesting.FakeClock // the monotonic axis; its timers are ours

	mu     sync.Mutex
	base   time.Time     // FakeClock's start
	offset time.Duration // wall minus monotonic, changed by JumpWall
}

// New starts the clock at wall time start.
func New(start time.Time) *Clock {
	start = start.Round(0)
	return &Clock{FakeClock: clocktesting.NewFakeClock(start), base: start}
}

// Now is the wall time with a monotonic reading, as time.Now returns it.
func (c *Clock) Now() time.Time {
	mono := c.FakeClock.Now()
	c.mu.Lock()
	off := c.offset
	c.mu.Unlock()
	return WithMonotonic(mono.Add(off), mono.Sub(c.base))
}

// Since is Now().Sub(t): the monotonic difference when t has a monotonic reading.
func (c *Clock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// JumpWall moves the wall time by d and leaves the monotonic time and every
// timer alone: a suspend of d (d > 0) or an NTP step (either sign).
func (c *Clock) JumpWall(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// Suspend is a machine asleep for d: the wall clock moves, nothing runs and
// no timer advances.
func (c *Clock) Suspend(d time.Duration) { c.JumpWall(d) }

// WithMonotonic returns the wall time of wall with the monotonic reading mono
// (nanoseconds since an arbitrary origin, like the process start), which the
// time package offers no way to build. It relies on time.Time's layout and
// panics if that layout is not what it expects.
func WithMonotonic(wall time.Time, mono time.Duration) time.Time {
	wall = wall.Round(0)
	sec := wall.Unix() + unixToWall // the packed form's seconds since 1885
	if sec < 0 || sec >= 1<<33 {
		panic(fmt.Sprintf("clocktest: %s is outside the packed wall range", wall))
	}
	var out time.Time
	o := (*timeLayout)(unsafe.Pointer(&out))
	o.wall = hasMonotonic | uint64(sec)<<nsecShift | uint64(wall.Nanosecond())
	o.ext = int64(mono)
	o.loc = (*timeLayout)(unsafe.Pointer(&wall)).loc // In would strip the monotonic reading
	if !out.Round(0).Equal(wall) || out.Location() != wall.Location() {
		panic(fmt.Sprintf("clocktest: time.Time layout changed: built %s, want %s", out.Round(0), wall))
	}
	return out
}

// timeLayout mirrors time.Time.
type timeLayout struct {
	wall uint64
	ext  int64
	loc  *time.Location
}

const (
	hasMonotonic = 1 << 63
	nsecShift    = 30
	// unixToWall is the time package's unixToInternal - wallToInternal:
	// seconds from 1885-01-01 (the packed form's origin) to 1970-01-01.
	unixToWall = ((1969*365 + 1969/4 - 1969/100 + 1969/400) - (1884*365 + 1884/4 - 1884/100 + 1884/400)) * 86400
)
