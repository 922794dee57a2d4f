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

// Cert is what the renewal decision needs to know about a stored certificate.
type Cert struct {
	NotBefore, NotAfter time.Time
	// StoredAt is when it was stored (the dated file's name says); zero if
	// unknown, as for a certificate another tool wrote.
	StoredAt time.Time
	// Serial is the certificate's serial number; the deadline's jitter derives from it.
	Serial []byte
}

// Known reports whether c describes a certificate.
func (c Cert) Known() bool { return !c.NotAfter.IsZero() }

// Deadline is when a certificate valid from notBefore to notAfter should be
// renewed. jitter is a uniform random number in [0, 1): with no RenewBefore
// the deadline is notBefore + (0.7 + 0.2*jitter) of the lifetime, as the
// kubelet's certificate manager does, so a fleet issued at once does not renew
// at once. A RenewBefore that is not shorter than the lifetime cannot be
// honoured (the signer chose a shorter lifetime, or clipped it to its CA's
// expiry); the default applies then, instead of renewing at once.
func (p Policy) Deadline(notBefore, notAfter time.Time, jitter float64) time.Time {
	lifetime := notAfter.Sub(notBefore)
	if lifetime <= 0 {
		return notBefore
	}
	if p.RenewBefore > 0 && p.RenewBefore < lifetime {
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

// MinGapFloor is the least time between two renewals of one certificate that
// are not forced.
const MinGapFloor = time.Minute

// MinGap is how long a certificate stays in use, at least, before it is
// renewed again (unless a person forces it): a tenth of the time it had left
// when it was stored, and never less than MinGapFloor. Whatever the policy,
// the signer's lifetimes or the clocks, a node thus makes a bounded number of
// requests: near a CA's expiry, where the signer clips every certificate
// shorter than the last, renewals do not come faster and faster.
func MinGap(left time.Duration) time.Duration {
	if g := left / 10; g > MinGapFloor {
		return g
	}
	return MinGapFloor
}

// NextRenewal is when c is renewed: its Deadline, but not before MinGap has
// passed since it was stored (since NotBefore when that is not known).
func (p Policy) NextRenewal(c Cert) time.Time {
	d := p.Deadline(c.NotBefore, c.NotAfter, JitterFor(c.Serial))
	stored := c.StoredAt
	if stored.IsZero() {
		stored = c.NotBefore
	}
	if floor := stored.Add(MinGap(c.NotAfter.Sub(stored))); d.Before(floor) {
		return floor
	}
	return d
}
