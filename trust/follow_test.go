package trust

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	testingclock "k8s.io/utils/clock/testing"
)

// recClock is a fake clock that tells the test each wait the Follower
// starts, once the wait is registered (so a Step after it fires it).
type recClock struct {
	*testingclock.FakeClock
	waits chan time.Duration
}

func (c *recClock) After(d time.Duration) <-chan time.Time {
	ch := c.FakeClock.After(d)
	c.waits <- d
	return ch
}

// fakeSource serves one published bundle; List fails with listErrs in turn.
type fakeSource struct {
	mu       sync.Mutex
	listErrs []error
	lists    int
	watches  chan *watch.RaceFreeFakeWatcher
}

func (s *fakeSource) List(context.Context) ([]Published, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	if len(s.listErrs) > 0 {
		err := s.listErrs[0]
		s.listErrs = s.listErrs[1:]
		if err != nil {
			return nil, "", err
		}
	}
	return []Published{{Name: "a", Signer: SignerAPIServerServing}}, fmt.Sprint(s.lists), nil
}

func (s *fakeSource) Watch(context.Context, string) (watch.Interface, error) {
	w := watch.NewRaceFreeFake()
	s.watches <- w
	return w, nil
}

func (s *fakeSource) ServerChain(context.Context) ([]*x509.Certificate, string, error) {
	return nil, "", nil
}

// seconds is a list of durations in seconds.
func seconds(s ...float64) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, x := range s {
		out[i] = time.Duration(x * float64(time.Second))
	}
	return out
}

// following is a running Follower and what it did.
type following struct {
	clock   *recClock
	src     *fakeSource
	applied chan []Published
	failed  chan error
	stop    context.CancelFunc
	done    chan struct{}
}

// follow runs a Follower whose List fails with listErrs and Apply with
// applyErrs in turn; Rand is always rnd.
func follow(t *testing.T, rnd float64, listErrs, applyErrs []error) *following {
	t.Helper()
	f := &following{
		clock:   &recClock{FakeClock: testingclock.NewFakeClock(base), waits: make(chan time.Duration, 100)},
		src:     &fakeSource{listErrs: listErrs, watches: make(chan *watch.RaceFreeFakeWatcher, 10)},
		applied: make(chan []Published, 10),
		failed:  make(chan error, 10),
		done:    make(chan struct{}),
	}
	var mu sync.Mutex
	fl := &Follower{
		Source: func(context.Context) (Source, error) { return f.src, nil },
		Apply: func(_ context.Context, _ Source, all []Published) error {
			mu.Lock()
			defer mu.Unlock()
			var err error
			if len(applyErrs) > 0 {
				err, applyErrs = applyErrs[0], applyErrs[1:]
			}
			f.applied <- all
			return err
		},
		Failed: func(err error) { f.failed <- err },
		Clock:  f.clock,
		Rand:   func() float64 { return rnd },
		Log:    zap.NewNop(),
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go func() { defer close(f.done); fl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return once its context ended")
		}
	})
	return f
}

// next is the next value of ch, or fails the test after a while.
func next[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
		var zero T
		return zero
	}
}

// idle checks that nothing more came on ch.
func idle[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Errorf("an unexpected %s: %v", what, v)
	default:
	}
}

func (f *following) listed() int {
	f.src.mu.Lock()
	defer f.src.mu.Unlock()
	return f.src.lists
}

// heard is the failure Failed heard before the retry wait just seen.
func (f *following) heard(t *testing.T) error {
	t.Helper()
	select {
	case err := <-f.failed:
		return err
	default:
		t.Error("Failed did not hear the failure before the retry wait")
		return nil
	}
}

// watching waits for the Follower to have applied and to watch again.
func (f *following) watching(t *testing.T) *watch.RaceFreeFakeWatcher {
	t.Helper()
	next(t, f.applied, "Apply")
	return next(t, f.src.watches, "Watch")
}

func TestFollowerAppliesAgainAfterAChange(t *testing.T) {
	obj := &metav1.Status{}
	tests := []struct {
		name    string
		change  func(w *watch.RaceFreeFakeWatcher)
		settles int // waits of the settle period
	}{
		{"an event", func(w *watch.RaceFreeFakeWatcher) { w.Add(obj) }, 1},
		{"several quick events, applied once", func(w *watch.RaceFreeFakeWatcher) { w.Add(obj); w.Modify(obj); w.Delete(obj) }, 3},
		{"a bookmark is no change", func(w *watch.RaceFreeFakeWatcher) { w.Action(watch.Bookmark, obj); w.Add(obj) }, 1},
		{"a closed watch", func(w *watch.RaceFreeFakeWatcher) { w.Stop() }, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := follow(t, 0.5, nil, nil)
			w := f.watching(t)
			if f.listed() != 1 {
				t.Fatalf("listed %d times at start, want once", f.listed())
			}
			tt.change(w)
			for range tt.settles {
				if d := next(t, f.clock.waits, "settle wait"); d != settle {
					t.Fatalf("waited %v to settle, want %v", d, settle)
				}
			}
			idle(t, f.applied, "Apply before the watch settled")
			f.clock.Step(settle)
			f.watching(t)
			if f.listed() != 2 {
				t.Errorf("listed %d times, want twice", f.listed())
			}
			idle(t, f.applied, "Apply")
			idle(t, f.failed, "failure")
			idle(t, f.clock.waits, "wait")
		})
	}
}

func TestFollowerRetries(t *testing.T) {
	boom := errors.New("connection refused")
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "certificates.k8s.io", Resource: "clustertrustbundles"}, "", boom)
	notServed := fmt.Errorf("listing: %w", ErrNotServed)
	tests := []struct {
		name                string
		rand                float64
		listErrs, applyErrs []error
		waits               []time.Duration
	}{
		{"list errors double the back-off", 0.5, []error{boom, boom, boom, boom}, nil, seconds(1, 2, 4, 8)},
		{"the back-off stops growing", 0.5, slices.Repeat([]error{boom}, 10), nil, seconds(1, 2, 4, 8, 16, 32, 64, 128, 256, 300)},
		{"jittered down", 0, []error{boom, boom}, nil, seconds(0.5, 1)},
		{"jittered up", 0.99, []error{boom, boom}, nil, seconds(1.49, 2.98)},
		{"not served", 0.5, []error{notServed}, nil, []time.Duration{notServedFor}},
		{"not served, jittered", 0, []error{notServed}, nil, []time.Duration{notServedFor / 2}},
		{"forbidden once: an API server starting up", 0.5, []error{forbidden}, nil, seconds(1)},
		{"forbidden again", 0.5, []error{forbidden, forbidden}, nil, []time.Duration{time.Second, forbiddenFor}},
		{"forbidden after other errors", 0.5, []error{boom, forbidden, forbidden}, nil, []time.Duration{time.Second, 2 * time.Second, forbiddenFor}},
		{"forbidden does not grow the back-off", 0.5, []error{forbidden, forbidden, forbidden, boom}, nil,
			[]time.Duration{time.Second, forbiddenFor, forbiddenFor, 2 * time.Second}},
		{"an Apply error", 0.5, nil, []error{boom, boom}, seconds(1, 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := follow(t, tt.rand, tt.listErrs, tt.applyErrs)
			for i, want := range append(tt.listErrs, tt.applyErrs...) {
				if d := next(t, f.clock.waits, "retry wait"); d != tt.waits[i] {
					t.Fatalf("retry %d after %v, want %v", i+1, d, tt.waits[i])
				}
				if err := f.heard(t); !errors.Is(err, want) {
					t.Errorf("Failed heard %v, want %v", err, want)
				}
				f.clock.Step(tt.waits[i])
			}
			for range tt.applyErrs {
				next(t, f.applied, "failed Apply")
			}
			f.watching(t)
			if want := len(tt.listErrs) + len(tt.applyErrs) + 1; f.listed() != want {
				t.Errorf("listed %d times, want %d", f.listed(), want)
			}
			idle(t, f.failed, "failure")
			idle(t, f.clock.waits, "wait")
		})
	}
}

func TestFollowerBackOffStartsOverAfterASuccess(t *testing.T) {
	boom := errors.New("connection refused")
	f := follow(t, 0.5, []error{boom, boom, nil, boom}, nil)
	for _, want := range seconds(1, 2) {
		if d := next(t, f.clock.waits, "retry wait"); d != want {
			t.Fatalf("retry after %v, want %v", d, want)
		}
		f.clock.Step(want)
	}
	f.watching(t).Stop()
	if d := next(t, f.clock.waits, "retry wait"); d != retryFirst {
		t.Errorf("after a success, retry after %v, want %v", d, retryFirst)
	}
}

func TestFollowerStopsWithItsContext(t *testing.T) {
	boom := errors.New("connection refused")
	tests := []struct {
		name     string
		listErrs []error
		reach    func(t *testing.T, f *following)
	}{
		{"while watching", nil, func(t *testing.T, f *following) { f.watching(t) }},
		{"while settling", nil, func(t *testing.T, f *following) {
			f.watching(t).Add(&metav1.Status{})
			next(t, f.clock.waits, "settle wait")
		}},
		{"while backing off", []error{boom}, func(t *testing.T, f *following) { next(t, f.clock.waits, "retry wait") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := follow(t, 0.5, tt.listErrs, nil)
			tt.reach(t, f)
			f.stop()
			next(t, f.done, "return from Run")
			idle(t, f.applied, "Apply")
		})
	}
}
