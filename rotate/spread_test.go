package rotate

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/certagent/certagent/internal/clocktest"
)

// fleetTask is one simulated node's step: it fails with err before the wall
// time until, then stores a day-long certificate; it records when it stepped.
type fleetTask struct {
	clk   *clocktest.Clock
	until time.Time
	err   error

	mu    sync.Mutex
	steps []time.Time
}

func (f *fleetTask) Step(ctx context.Context, renew bool) (Result, error) {
	now := f.clk.Now().Round(0)
	f.mu.Lock()
	f.steps = append(f.steps, now)
	n := len(f.steps)
	f.mu.Unlock()
	if now.Before(f.until) {
		return Result{}, f.err
	}
	return Result{Cert: Cert{NotBefore: now, NotAfter: now.Add(24 * time.Hour), StoredAt: now, Serial: []byte(fmt.Sprint(n))}, Stored: true}, nil
}

var errNoCredentials = errors.New("no credentials")

func classifyFleet(err error) Class {
	switch {
	case err == nil:
		return Done
	case errors.Is(err, errNoCredentials):
		return Blocked
	}
	return Transient
}

// runFleet starts n loops at once on one clock, node i drawing its jitter
// from its own seeded source, each failing with err until the wall time
// start+failFor; it runs them for d of simulated time and returns each
// node's steps.
func runFleet(t *testing.T, n int, err error, failFor, d time.Duration) (start time.Time, steps [][]time.Time) {
	clk := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	start = clk.Now().Round(0)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	tasks := make([]*fleetTask, n)
	var wg sync.WaitGroup
	for i := range tasks {
		tasks[i] = &fleetTask{clk: clk, until: start.Add(failFor), err: err}
		rnd := rand.New(rand.NewPCG(uint64(i), 6))
		l, lerr := NewLoop(LoopConfig{Task: tasks[i], Classify: classifyFleet, Clock: clk, Rand: rnd.Float64})
		if lerr != nil {
			t.Fatal(lerr)
		}
		wg.Go(func() { l.Run(ctx) })
	}
	synctest.Wait()
	for elapsed := time.Duration(0); elapsed < d; elapsed += 500 * time.Millisecond {
		clk.Step(500 * time.Millisecond)
		synctest.Wait()
	}
	cancel()
	wg.Wait()
	for _, task := range tasks {
		steps = append(steps, task.steps)
	}
	return start, steps
}

// spread describes when a fleet acted: from the first to the last node,
// between the 10th and 90th percentiles, and the most nodes within any 10 s.
func spread(times []time.Time) (all, p10p90 time.Duration, busiest10s int) {
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	for i, j := 0, 0; i < len(times); i++ {
		for times[i].Sub(times[j]) >= 10*time.Second {
			j++
		}
		busiest10s = max(busiest10s, i-j+1)
	}
	n := len(times)
	return times[n-1].Sub(times[0]), times[n*9/10].Sub(times[n/10]), busiest10s
}

// TestFleetBlockedPollsSpread: 1000 nodes blocked at the same instant (a
// fleet restarted together with nothing to bootstrap from, or with a
// kubelet.conf the API server rejects: a SelfSubjectReview at each look)
// look again spread over most of the 5-minute poll ([2.5, 7.5) minutes),
// not all in the same second.
func TestFleetBlockedPollsSpread(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, steps := runFleet(t, 1000, errNoCredentials, 24*time.Hour, 8*time.Minute)
		var firstLook []time.Time
		for i, s := range steps {
			if len(s) < 2 {
				t.Fatalf("node %d did not look again within 8 minutes: steps at %v", i, s)
			}
			if d := s[1].Sub(start); d < 150*time.Second || d > 451*time.Second {
				t.Fatalf("node %d looked again after %s, want within [2.5, 7.5] minutes", i, d)
			}
			firstLook = append(firstLook, s[1])
		}
		all, mid, busiest := spread(firstLook)
		t.Logf("first looks again: spread over %s, 10th–90th percentile %s, at most %d of 1000 in 10 s", all, mid, busiest)
		if all < 4*time.Minute || mid < 3*time.Minute || busiest > 60 {
			t.Fatalf("1000 nodes blocked together look again spread over %s (10th–90th percentile %s), up to %d in 10 s; want over 4 minutes, 3 between the percentiles, at most 60 in 10 s",
				all, mid, busiest)
		}
	})
}

// TestFleetBackoffSpreads: 1000 nodes fail together while the API server is
// away for a minute (a restart), backing off from the same instant. When it
// is back, their first successful attempts come spread over more than a
// minute, not within seconds of each other (0–20 % jitter on top of each
// delay brought 999 of them back within 10 s).
func TestFleetBackoffSpreads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start, steps := runFleet(t, 1000, errors.New("connection refused"), time.Minute, 5*time.Minute)
		back := start.Add(time.Minute)
		var firstBack []time.Time
		for i, s := range steps {
			j := slices.IndexFunc(s, func(at time.Time) bool { return !at.Before(back) })
			if j < 0 {
				t.Fatalf("node %d made no attempt within 4 minutes of the API server's return: %v", i, s)
			}
			firstBack = append(firstBack, s[j])
		}
		all, mid, busiest := spread(firstBack)
		t.Logf("first attempts after the return: spread over %s, 10th–90th percentile %s, at most %d of 1000 in 10 s", all, mid, busiest)
		if all < 75*time.Second || mid < 50*time.Second || busiest > 400 {
			t.Fatalf("1000 nodes that failed together came back spread over %s (10th–90th percentile %s), up to %d in 10 s; want over 75 s, 50 s between the percentiles, at most 400 in 10 s",
				all, mid, busiest)
		}
	})
}
