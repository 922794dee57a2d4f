package rotate

import (
	"testing"
	"time"
)

func TestDeadline(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	year := nb.Add(100 * 24 * time.Hour)
	for _, tc := range []struct {
		name     string
		policy   Policy
		notAfter time.Time
		jitter   float64
		want     time.Time
	}{
		{"jitter 0 is 70 %", Policy{}, year, 0, nb.Add(70 * 24 * time.Hour)},
		{"jitter 0.5 is 80 %", Policy{}, year, 0.5, nb.Add(80 * 24 * time.Hour)},
		{"jitter near 1 is below 90 %", Policy{}, year, 0.999999, nb.Add(time.Duration(float64(100*24*time.Hour) * (0.7 + 0.2*0.999999)).Round(time.Millisecond))},
		{"jitter out of range is clamped", Policy{}, year, 7, nb.Add(time.Duration(float64(100*24*time.Hour) * (0.7 + 0.2*0.999999)).Round(time.Millisecond))},
		{"negative jitter is clamped", Policy{}, year, -1, nb.Add(70 * 24 * time.Hour)},
		{"renewBefore", Policy{RenewBefore: 10 * 24 * time.Hour}, year, 0.3, nb.Add(90 * 24 * time.Hour)},
		{"renewBefore longer than lifetime falls back to 70-90 %", Policy{RenewBefore: 1000 * time.Hour * 24}, year, 0, nb.Add(70 * 24 * time.Hour)},
		{"renewBefore equal to lifetime falls back", Policy{RenewBefore: 100 * 24 * time.Hour}, year, 0.5, nb.Add(80 * 24 * time.Hour)},
		{"empty lifetime", Policy{}, nb, 0.5, nb},
		{"ten minute cert, renewBefore 9m50s", Policy{RenewBefore: 9*time.Minute + 50*time.Second}, nb.Add(10 * time.Minute), 0, nb.Add(10 * time.Second)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.Deadline(nb, tc.notAfter, tc.jitter); !got.Equal(tc.want) {
				t.Fatalf("Deadline = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestNextRenewal(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	serial := []byte{1, 2, 3}
	j := JitterFor(serial)
	for _, tc := range []struct {
		name   string
		policy Policy
		cert   Cert
		want   time.Time
	}{
		{"the deadline when the gap is long past", Policy{}, Cert{NotBefore: nb, NotAfter: nb.Add(100 * time.Hour), StoredAt: nb.Add(5 * time.Minute), Serial: serial},
			Policy{}.Deadline(nb, nb.Add(100*time.Hour), j)},
		{"gap: a tenth of the time left at storing", Policy{RenewBefore: 99 * time.Hour}, Cert{NotBefore: nb, NotAfter: nb.Add(100 * time.Hour), StoredAt: nb, Serial: serial},
			nb.Add(10 * time.Hour)},
		{"gap floor: a minute", Policy{RenewBefore: 9*time.Minute + 55*time.Second}, Cert{NotBefore: nb, NotAfter: nb.Add(10 * time.Minute), StoredAt: nb, Serial: serial},
			nb.Add(time.Minute)},
		{"unknown store time: NotBefore", Policy{RenewBefore: 99 * time.Hour}, Cert{NotBefore: nb, NotAfter: nb.Add(100 * time.Hour), Serial: serial},
			nb.Add(10 * time.Hour)},
		{"signer backdated 5m, issued with 10m left, renewBefore 9m: 1m after storing",
			Policy{RenewBefore: 9 * time.Minute}, Cert{NotBefore: nb, NotAfter: nb.Add(15 * time.Minute), StoredAt: nb.Add(5 * time.Minute), Serial: serial},
			nb.Add(6 * time.Minute)},
		{"clipped by the CA: 30 s left, renewal a minute after storing, not at once",
			Policy{}, Cert{NotBefore: nb, NotAfter: nb.Add(5*time.Minute + 30*time.Second), StoredAt: nb.Add(5 * time.Minute), Serial: serial},
			nb.Add(6 * time.Minute)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.NextRenewal(tc.cert); !got.Equal(tc.want) {
				t.Fatalf("NextRenewal = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestRenewalsNearCAExpiryAreBounded: a signer that clips every certificate
// to its CA's expiry makes each one shorter than the last; renewals must not
// come faster and faster (a CSR storm in the CA's last hours).
func TestRenewalsNearCAExpiryAreBounded(t *testing.T) {
	for _, p := range []Policy{{}, {RenewBefore: 30 * 24 * time.Hour}, {RenewBefore: 9 * time.Minute}} {
		caExpiry := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
		now := caExpiry.Add(-60 * 24 * time.Hour)
		renewals := 0
		for serial := 0; now.Before(caExpiry); serial++ {
			notAfter := now.Add(365 * 24 * time.Hour)
			if notAfter.After(caExpiry) {
				notAfter = caExpiry // the signer clips
			}
			c := Cert{NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter, StoredAt: now, Serial: []byte{byte(serial), byte(serial >> 8)}}
			next := p.NextRenewal(c)
			if !next.After(now) {
				t.Fatalf("%+v: renewal due at once (%s) for a certificate stored at %s", p, next, now)
			}
			now = next
			renewals++
		}
		// From 60 days out, the gap (a tenth of what is left, at least a
		// minute) allows at most about 10·ln(60d/10min) + 10 renewals.
		if renewals > 110 {
			t.Fatalf("%+v: %d renewals in a CA's last 60 days", p, renewals)
		}
		t.Logf("%+v: %d renewals in the CA's last 60 days", p, renewals)
	}
}

func TestCapToExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		delay    time.Duration
		notAfter time.Time
		want     time.Duration
	}{
		{"an hour's back-off, 40 minutes left: half of them", time.Hour, now.Add(40 * time.Minute), 20 * time.Minute},
		{"short delay unchanged", 5 * time.Second, now.Add(40 * time.Minute), 5 * time.Second},
		{"a few seconds left: MinRetry", time.Hour, now.Add(4 * time.Second), MinRetry},
		{"expired: unchanged", time.Hour, now.Add(-time.Minute), time.Hour},
		{"no certificate: unchanged", time.Hour, time.Time{}, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := CapToExpiry(tc.delay, now, tc.notAfter); got != tc.want {
				t.Fatalf("CapToExpiry = %s, want %s", got, tc.want)
			}
		})
	}
}

// TestBackoffSchedules pins the documented schedules (docs/config.md):
// transient failures from 1 s doubling to 2 minutes, failures that need a
// person from 5 minutes doubling to 1 hour, each drawn from [0.5, 1.5) of
// that nominal delay (the middle draw is the nominal delay).
func TestBackoffSchedules(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"transient", DefaultBackoff, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 64 * time.Second, 2 * time.Minute, 2 * time.Minute}},
		{"needs a person", PermanentBackoff, []time.Duration{5 * time.Minute, 10 * time.Minute, 20 * time.Minute, 40 * time.Minute, time.Hour, time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, want := range tc.want {
				if got := tc.b.Delay(i+1, 0.5); got != want {
					t.Errorf("failure %d, middle draw: %s, want %s", i+1, got, want)
				}
				if got := tc.b.Delay(i+1, 0); got != want/2 {
					t.Errorf("failure %d, lowest draw: %s, want %s", i+1, got, want/2)
				}
				if got, lo, hi := tc.b.Delay(i+1, 0.999999), want*3/2-want/1000, want*3/2; got < lo || got >= hi {
					t.Errorf("failure %d, highest draw: %s, want just under %s", i+1, got, hi)
				}
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 30 * time.Second, Factor: 2, Jitter: 0.5}
	for _, tc := range []struct {
		name     string
		failures int
		rnd      float64
		want     time.Duration
	}{
		{"first, middle draw", 1, 0.5, time.Second},
		{"zero treated as first", 0, 0.5, time.Second},
		{"second", 2, 0.5, 2 * time.Second},
		{"fifth", 5, 0.5, 16 * time.Second},
		{"capped", 6, 0.5, 30 * time.Second},
		{"capped far out", 1000, 0.5, 30 * time.Second},
		{"lowest draw: half", 1, 0, 500 * time.Millisecond},
		{"a quarter up the band", 1, 0.25, 750 * time.Millisecond},
		{"cap, highest draw", 1000, 0.999, time.Duration(float64(30*time.Second) * (0.5 + 0.999))},
		{"draw below 0 is clamped", 1, -3, 500 * time.Millisecond},
		{"draw of 1 or more is clamped below 1.5", 1, 7, 1499999 * time.Microsecond},
		{"no jitter", 3, 0.9, 4 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := b
			if tc.name == "no jitter" {
				b.Jitter = 0
			}
			if got := b.Delay(tc.failures, tc.rnd); !near(got, tc.want) {
				t.Fatalf("Delay(%d, %v) = %s, want %s", tc.failures, tc.rnd, got, tc.want)
			}
		})
	}
}

// TestBackoffAfterRetryAfter: a Retry-After is a floor, drawn from
// [1, 1.5) of it, so that a fleet the API server turned away together (API
// Priority and Fairness gives them one Retry-After) does not return
// together and no node returns sooner than asked; without one, After is
// Delay.
func TestBackoffAfterRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		failures   int
		retryAfter time.Duration
		rnd        float64
		want       time.Duration
	}{
		{"no Retry-After: the back-off", 3, 0, 0.5, DefaultBackoff.Delay(3, 0.5)},
		{"Retry-After above the back-off, lowest draw: exactly it", 1, 32 * time.Second, 0, 32 * time.Second},
		{"Retry-After above the back-off, middle draw", 1, 32 * time.Second, 0.5, 40 * time.Second},
		{"Retry-After above the back-off, highest draw", 1, 32 * time.Second, 0.999, time.Duration(float64(32*time.Second) * (1 + 0.5*0.999))},
		{"back-off above Retry-After", 7, time.Second, 0.5, DefaultBackoff.Delay(7, 0.5)},
		{"back-off's lowest draw below Retry-After: Retry-After", 7, 40 * time.Second, 0, 40 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := DefaultBackoff.After(tc.failures, tc.retryAfter, tc.rnd)
			if got != tc.want {
				t.Fatalf("After(%d, %s, %v) = %s, want %s", tc.failures, tc.retryAfter, tc.rnd, got, tc.want)
			}
			if got < tc.retryAfter {
				t.Fatalf("After(%d, %s, %v) = %s: sooner than the server asked", tc.failures, tc.retryAfter, tc.rnd, got)
			}
		})
	}
	// Across a fleet (rnd uniform), the retries after one Retry-After spread
	// over half of it, none sooner.
	lo, hi := DefaultBackoff.After(1, 10*time.Second, 0), DefaultBackoff.After(1, 10*time.Second, 0.999999)
	if lo != 10*time.Second || hi < 14990*time.Millisecond || hi >= 15*time.Second {
		t.Fatalf("retries after Retry-After: 10 span %s … %s, want 10 s … 15 s", lo, hi)
	}
}

// TestPollDelay: a Blocked loop looks again after Poll drawn from
// [0.5, 1.5) of it: the middle draw is Poll itself.
func TestPollDelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		rnd  float64
		want time.Duration
	}{
		{"lowest draw: half", 0, 150 * time.Second},
		{"middle draw: the poll", 0.5, 5 * time.Minute},
		{"highest draw: just under one and a half", 0.999999, 7*time.Minute + 29999700*time.Microsecond},
		{"draw below 0 is clamped", -1, 150 * time.Second},
		{"draw of 1 or more is clamped", 1, 7*time.Minute + 29999700*time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PollDelay(5*time.Minute, tc.rnd); !near(got, tc.want) {
				t.Fatalf("PollDelay(5m, %v) = %s, want %s", tc.rnd, got, tc.want)
			}
		})
	}
}

// near: equal to within a microsecond (floating point rounding).
func near(a, b time.Duration) bool { return a-b < time.Microsecond && b-a < time.Microsecond }
