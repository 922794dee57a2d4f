package agent

import (
	"sync"
	"time"

	"github.com/certagent/certagent/bootstrap"
)

// Once a burst of work is over (a bootstrap, a renewal, a late Event) the
// daemon closes its idle connections to the API server. client-go keeps them
// open for 90 s after the last request and pings them every 30 s meanwhile,
// with their buffers, goroutines and TLS state; an idle daemon needs none of
// them for months, and its next renewal dials again (docs/metrics.md,
// "Memory"). A watch in progress keeps its connection.

// closeIdleConnections is the daemon's Options.CloseIdle.
func CloseIdleConnections(b *bootstrap.Bootstrapper) { b.CloseIdleConnections() }

// settleDelay is how long the daemon must stay settled before it closes its
// idle connections: once after a bootstrap that posts the client CSR, stores
// it and posts the serving CSR within a second.
const settleDelay = 2 * time.Second

// settler runs fn once the calls to settled have stopped for delay.
type settler struct {
	delay time.Duration
	fn    func()

	mu      sync.Mutex
	timer   *time.Timer
	stopped bool
}

// settled says the daemon has just finished a burst of work. fn runs on its
// own goroutine after delay (real time: it changes no behaviour, so it needs
// no injected clock).
func (s *settler) settled() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	if s.timer == nil {
		s.timer = time.AfterFunc(s.delay, s.fn)
		return
	}
	s.timer.Reset(s.delay)
}

// stop cancels a pending run; no more are scheduled.
func (s *settler) stop() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopped = true
	if s.timer != nil {
		s.timer.Stop()
	}
}
