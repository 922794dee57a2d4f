package rotate

import "time"

// Backoff is capped exponential back-off with jitter for failed attempts.
type Backoff struct {
	Initial time.Duration // first delay
	Max     time.Duration // cap
	Factor  float64       // growth per failure, e.g. 2
	// Jitter is the half-width of the band each delay is drawn from, as a
	// fraction of it: 0.5 draws uniformly from [0.5, 1.5) of the nominal
	// delay, so the mean is the nominal schedule.
	Jitter float64
}

// BackoffJitter is the jitter of every schedule below. Nodes that failed
// together (an API server restart, a fleet restarted together) all reach the
// same nominal delay at the same failure; drawn from [0.5, 1.5) of it they
// come back spread over a whole delay (2 minutes at the transient cap, where
// 0–20 % on top spread them over 24 s), and each further draw spreads them
// more. The mean stays the nominal schedule, so a failing node makes as many
// attempts as before, and none comes back sooner than half the delay.
const BackoffJitter = 0.5

// DefaultBackoff is for transient failures (the API server unreachable or
// overloaded): it starts at 1 s and doubles up to 2 minutes.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 2 * time.Minute, Factor: 2, Jitter: BackoffJitter}

// PermanentBackoff is for failures that need a person (a denied CSR, a
// rejected token, a certificate that fails verification): retrying sooner
// only makes noise and new CSR objects. 5 minutes doubling up to 1 hour.
var PermanentBackoff = Backoff{Initial: 5 * time.Minute, Max: time.Hour, Factor: 2, Jitter: BackoffJitter}

// NodeFaultBackoff is for a node that failed its own step (NodeFault): a
// full, read-only or failing disk, no file descriptor left. Nothing tells
// certagent when that clears (an operator frees space, a log is rotated), so
// it looks again soon: 2 seconds doubling up to 30, so that the step runs
// again at most 45 s (the cap's highest draw) after the node recovered, within
// a minute, as the kubelet's certificate manager retries within 32 s. Not
// sooner: a fault of this kind lasts minutes or hours, and each retry is
// counted and may look up the pending CSR (two requests, if the disk filled
// while it was issued; a full disk usually fails the pending key's write
// first, before any request).
var NodeFaultBackoff = Backoff{Initial: 2 * time.Second, Max: 30 * time.Second, Factor: 2, Jitter: BackoffJitter}

// Longest is the longest wait b draws: its cap's highest draw.
func (b Backoff) Longest() time.Duration {
	return time.Duration(float64(b.Max) * (1 + b.Jitter))
}

// Delay is the wait after the failures-th consecutive failure (1-based):
// the nominal delay (Initial, times Factor per further failure, at most Max)
// times 1 - Jitter + 2*Jitter*rnd; rnd is uniform in [0, 1). The result is
// never below Initial*(1-Jitter) nor above Max*(1+Jitter).
func (b Backoff) Delay(failures int, rnd float64) time.Duration {
	if failures < 1 {
		failures = 1
	}
	d := float64(b.Initial)
	for i := 1; i < failures && d < float64(b.Max); i++ {
		d *= b.Factor
	}
	if d > float64(b.Max) {
		d = float64(b.Max)
	}
	return time.Duration(d * (1 - b.Jitter + 2*b.Jitter*clampUnit(rnd)))
}

// clampUnit keeps a random draw in [0, 1).
func clampUnit(rnd float64) float64 {
	switch {
	case rnd < 0:
		return 0
	case rnd >= 1:
		return 0.999999
	}
	return rnd
}

// After is the wait after the failures-th consecutive failure when the
// server asked for retryAfter (a 429 or 503 with Retry-After; 0 if it did
// not): the longer of Delay and retryAfter drawn from [1, 1+Jitter) of it.
// Retry-After is a floor, never a time to meet: an overloaded API server
// (API Priority and Fairness) gives every client it turns away in the same
// second the same Retry-After, and a fleet that waited exactly that long
// would come back together. rnd is uniform in [0, 1).
func (b Backoff) After(failures int, retryAfter time.Duration, rnd float64) time.Duration {
	d := b.Delay(failures, rnd)
	if retryAfter > 0 {
		d = max(d, time.Duration(float64(retryAfter)*(1+b.Jitter*clampUnit(rnd))))
	}
	return d
}

// PollDelay is the wait of a Blocked loop before it looks again: poll drawn
// uniformly from [0.5, 1.5) of it (rnd uniform in [0, 1)). A fleet blocked
// together (restarted together with a rejected kubelet.conf: a
// SelfSubjectReview at each look) thus spreads its looks over a whole poll
// instead of asking in the same second every time, and asks as often as
// before on average.
func PollDelay(poll time.Duration, rnd float64) time.Duration {
	return time.Duration(float64(poll) * (0.5 + clampUnit(rnd)))
}

// MinRetry is the shortest wait CapToExpiry leaves.
const MinRetry = 10 * time.Second

// CapToExpiry shortens a wait so that a certificate still valid at now gets
// further attempts before it expires: at most half the time it has left
// (never below MinRetry). A back-off that needs a person (up to an hour)
// must not carry the next attempt past NotAfter. A zero or past notAfter
// leaves delay as it is.
func CapToExpiry(delay time.Duration, now, notAfter time.Time) time.Duration {
	if notAfter.IsZero() || !now.Before(notAfter) {
		return delay
	}
	limit := notAfter.Sub(now) / 2
	if limit < MinRetry {
		limit = MinRetry
	}
	if delay > limit {
		return limit
	}
	return delay
}
