package rotate

import "time"

// Backoff is capped exponential back-off with jitter for failed attempts.
type Backoff struct {
	Initial time.Duration // first delay
	Max     time.Duration // cap
	Factor  float64       // growth per failure, e.g. 2
	Jitter  float64       // fraction of the delay added at random, e.g. 0.2
}

// DefaultBackoff is for transient failures (the API server unreachable or
// overloaded): it starts at 1 s and doubles up to 2 minutes, plus up to 20 %.
var DefaultBackoff = Backoff{Initial: time.Second, Max: 2 * time.Minute, Factor: 2, Jitter: 0.2}

// PermanentBackoff is for failures that need a person (a denied CSR, a
// rejected token, a certificate that fails verification): retrying sooner
// only makes noise and new CSR objects. 5 minutes doubling up to 1 hour.
var PermanentBackoff = Backoff{Initial: 5 * time.Minute, Max: time.Hour, Factor: 2, Jitter: 0.2}

// Delay is the wait after the failures-th consecutive failure (1-based);
// rnd is uniform in [0, 1). The result never exceeds Max*(1+Jitter).
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
	return time.Duration(d * (1 + b.Jitter*rnd))
}

// After is the wait after the failures-th consecutive failure when the
// server asked for retryAfter (a 429 or 503 with Retry-After; 0 if it did
// not): the longer of Delay and retryAfter, and in both cases with the same
// jitter. Retry-After is a floor, never a time to meet: an overloaded API
// server (API Priority and Fairness) gives every client it turns away in the
// same second the same Retry-After, and a fleet that waited exactly that long
// would come back together. rnd is uniform in [0, 1).
func (b Backoff) After(failures int, retryAfter time.Duration, rnd float64) time.Duration {
	d := b.Delay(failures, rnd)
	if retryAfter > 0 {
		d = max(d, time.Duration(float64(retryAfter)*(1+b.Jitter*rnd)))
	}
	return d
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
