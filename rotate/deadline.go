package rotate

import (
	"time"
)

// Policy says when a certificate is renewed.
type Policy struct {
	// RenewBefore, if positive, renews this long before NotAfter instead of
	// at the kubelet's jittered 70–90 % of the lifetime.
	RenewBefore time.Duration
}

// Deadline is when a certificate valid from notBefore to notAfter should be
// renewed. jitter is a uniform random number in [0, 1): with no RenewBefore
// the deadline is notBefore + (0.7 + 0.2*jitter) of the lifetime, as the
// kubelet's certificate manager does, so a fleet issued at once does not renew
// at once. A RenewBefore longer than the lifetime means "now" (notBefore).
func (p Policy) Deadline(notBefore, notAfter time.Time, jitter float64) time.Time {
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return notBefore
	}
	if p.RenewBefore > 0 {
		if p.RenewBefore >= lifetime {
			return notBefore
		}
		return notAfter.Add(-p.RenewBefore)
	}
	if jitter < 0 {
		jitter = 0
	} else if jitter >= 1 {
		jitter = 0.999999
	}
	// Rounded to the millisecond: certificates carry whole seconds anyway.
	return notBefore.Add(time.Duration(float64(lifetime) * (0.7 + 0.2*jitter)).Round(time.Millisecond))
}
