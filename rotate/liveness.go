package rotate

import (
	"sync"
	"time"
)

// Phase is what a loop is doing, for the watchdog.
type Phase int

const (
	// Idle: sleeping until a deadline or a kick.
	Idle Phase = iota
	// Busy: doing work that must end in bounded time (files, API requests
	// with timeouts, hooks with timeouts).
	Busy
	// Waiting: blocked on an approval that may take days; alive.
	Waiting
)

// Liveness records a loop's phase so the agent can tell a hung loop (Busy for
// too long) from one that sleeps or waits for a person.
type Liveness struct {
	mu    sync.Mutex
	phase Phase
	since time.Time
}

// Set records phase p from now on.
func (l *Liveness) Set(p Phase, now time.Time) {
	l.mu.Lock()
	l.phase, l.since = p, now
	l.mu.Unlock()
}

// BusyFor is how long the loop has been Busy at now (0 if it is not).
func (l *Liveness) BusyFor(now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.phase != Busy {
		return 0
	}
	return now.Sub(l.since)
}
