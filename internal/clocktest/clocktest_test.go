package clocktest

import (
	"strings"
	"testing"
	"time"
)

func TestWithMonotonicBehavesLikeTimeNow(t *testing.T) {
	wall := time.Date(2026, 11, 22, 12, 0, 0, 123, time.UTC)
	a := WithMonotonic(wall, 10*time.Second)
	b := WithMonotonic(wall.Add(5*time.Hour), 20*time.Second) // 5 h of wall, 10 s of monotonic
	if got := b.Sub(a); got != 10*time.Second {
		t.Fatalf("Sub with monotonic readings = %s, want 10s (the monotonic difference)", got)
	}
	if got := b.Round(0).Sub(a.Round(0)); got != 5*time.Hour {
		t.Fatalf("Sub of the wall readings = %s, want 5h", got)
	}
	if !a.Round(0).Equal(wall) {
		t.Fatalf("wall reading %s, want %s", a.Round(0), wall)
	}
	if !strings.Contains(a.String(), "m=+10.0") || !strings.Contains(WithMonotonic(wall, 0).String(), "m=+0.0") {
		t.Fatalf("String %q lacks the monotonic reading", a.String())
	}
	// Add keeps both readings, as it does for time.Now.
	if c := a.Add(time.Minute); c.Sub(a) != time.Minute || !c.Round(0).Equal(wall.Add(time.Minute)) {
		t.Fatalf("Add: %s", c)
	}
}

func TestClockSuspend(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := New(start)
	fired := c.After(time.Hour)
	before := c.Now()
	c.Suspend(3 * time.Hour)
	if got := c.Now().Round(0).Sub(start); got != 3*time.Hour {
		t.Fatalf("wall after a 3h suspend moved %s", got)
	}
	if got := c.Since(before); got != 0 {
		t.Fatalf("monotonic time moved %s during the suspend", got)
	}
	select {
	case <-fired:
		t.Fatal("a timer fired during the suspend")
	default:
	}
	c.Step(time.Hour)
	select {
	case <-fired:
	default:
		t.Fatal("the timer did not fire after an hour of monotonic time")
	}
}
