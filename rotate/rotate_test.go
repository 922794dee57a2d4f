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
		{"renewBefore longer than lifetime", Policy{RenewBefore: 1000 * time.Hour * 24}, year, 0, nb},
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

func TestBackoff(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 30 * time.Second, Factor: 2, Jitter: 0.5}
	for _, tc := range []struct {
		name     string
		failures int
		rnd      float64
		want     time.Duration
	}{
		{"first", 1, 0, time.Second},
		{"zero treated as first", 0, 0, time.Second},
		{"second", 2, 0, 2 * time.Second},
		{"fifth", 5, 0, 16 * time.Second},
		{"capped", 6, 0, 30 * time.Second},
		{"capped far out", 1000, 0, 30 * time.Second},
		{"jitter adds up to half", 1, 0.5, 1250 * time.Millisecond},
		{"cap plus jitter", 1000, 0.999, time.Duration(float64(30*time.Second) * (1 + 0.5*0.999))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := b.Delay(tc.failures, tc.rnd); got != tc.want {
				t.Fatalf("Delay(%d, %v) = %s, want %s", tc.failures, tc.rnd, got, tc.want)
			}
		})
	}
}
