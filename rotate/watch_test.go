package rotate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// waitArmed waits (real time, 5 s at most) until the watcher has armed its
// timer on clk: it has read an event.
func waitArmed(t *testing.T, clk *clocktesting.FakeClock) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !clk.HasWaiters(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no file event read within 5 s")
		}
	}
}

// TestWatchDirsNoticesRenamesAndRemovals: a file renamed into a watched
// directory (an atomic write) and a file removed from it are each reported,
// once the debounce has passed on the injected clock and not before.
func TestWatchDirsNoticesRenamesAndRemovals(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clk := clocktesting.NewFakeClock(time.Now())
	const debounce = 50 * time.Millisecond
	ch, err := WatchDirs(ctx, zap.NewNop(), clk, debounce, dir, dir)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(what string) {
		t.Helper()
		waitArmed(t, clk)
		select {
		case <-ch:
			t.Fatalf("%s reported before the debounce passed", what)
		case <-time.After(20 * time.Millisecond):
		}
		for clk.HasWaiters() { // events still coming in extend the burst
			clk.Step(debounce)
			time.Sleep(20 * time.Millisecond)
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no notification for %s", what)
		}
	}
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "kubelet.conf")); err != nil {
		t.Fatal(err)
	}
	expect("a rename into the watched directory")
	if err := os.Remove(filepath.Join(dir, "kubelet.conf")); err != nil {
		t.Fatal(err)
	}
	expect("a removal")
}

// debouncerTest runs a debouncer on a fake clock in a synctest bubble and
// hands body a function that feeds it an event and one that counts the
// notifications sent so far (each read clears the pending one).
func debouncerTest(t *testing.T, debounce time.Duration, body func(clk *clocktesting.FakeClock, event func(), notified func() int)) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		clk := clocktesting.NewFakeClock(time.Now())
		events := make(chan fsnotify.Event)
		out := make(chan struct{}, 1)
		d := debouncer{log: zap.NewNop(), clk: clk, debounce: debounce, out: out}
		go d.run(ctx, events, nil)
		count := 0
		body(clk,
			func() { events <- fsnotify.Event{Name: "f"}; synctest.Wait() },
			func() int {
				synctest.Wait()
				select {
				case <-out:
					count++
				default:
				}
				return count
			})
	})
}

// TestWatchDirsDebouncesABurst: the events of a burst (an atomic write:
// create, write, rename) give one notification, debounce after the last of
// them on the injected clock.
func TestWatchDirsDebouncesABurst(t *testing.T) {
	const debounce = 250 * time.Millisecond
	debouncerTest(t, debounce, func(clk *clocktesting.FakeClock, event func(), notified func() int) {
		for range 5 {
			event()
			clk.Step(debounce / 2)
		}
		if n := notified(); n != 0 {
			t.Fatalf("%d notifications during the burst, want none", n)
		}
		clk.Step(debounce/2 - time.Millisecond)
		if n := notified(); n != 0 {
			t.Fatalf("%d notifications before the debounce passed, want none", n)
		}
		clk.Step(time.Millisecond)
		if n := notified(); n != 1 {
			t.Fatalf("%d notifications once the debounce passed, want 1", n)
		}
		clk.Step(time.Hour)
		if n := notified(); n != 1 {
			t.Fatalf("%d notifications an hour later, want still 1", n)
		}
	})
}

// TestWatchDirsReportsDuringEndlessWrites: a file in a watched directory that
// is written without pause (say a log) must not starve the notification a
// dropped bootstrap kubeconfig needs: a burst is reported at most ten
// debounce intervals after it began.
func TestWatchDirsReportsDuringEndlessWrites(t *testing.T) {
	const debounce = 50 * time.Millisecond
	debouncerTest(t, debounce, func(clk *clocktesting.FakeClock, event func(), notified func() int) {
		var took []time.Duration
		start := clk.Now()
		for len(took) < 3 {
			event()
			clk.Step(5 * time.Millisecond) // never a debounce-long pause
			if notified() > len(took) {
				took = append(took, clk.Since(start))
				start = clk.Now()
			}
			if clk.Since(start) > time.Second {
				t.Fatalf("notification %d: none after 1 s of endless writes", len(took)+1)
			}
		}
		for i, d := range took {
			if d > maxBurst(debounce) {
				t.Errorf("notification %d came %s after the burst began, want at most %s", i+1, d, maxBurst(debounce))
			}
		}
	})
}

// TestWatchDirsCoalesces: a notification not yet read is not queued again.
func TestWatchDirsCoalesces(t *testing.T) {
	const debounce = 50 * time.Millisecond
	debouncerTest(t, debounce, func(clk *clocktesting.FakeClock, event func(), notified func() int) {
		event()
		clk.Step(debounce)
		synctest.Wait()
		event()
		clk.Step(debounce)
		if n := notified(); n != 1 {
			t.Fatalf("%d notifications read, want 1", n)
		}
		if n := notified(); n != 1 {
			t.Fatalf("a second notification was queued: %d read", n)
		}
	})
}

func TestWatchDirsMissingDir(t *testing.T) {
	if _, err := WatchDirs(context.Background(), zap.NewNop(), clock.RealClock{}, time.Millisecond, filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("watching a missing directory must fail")
	}
}

func TestJitterFor(t *testing.T) {
	seen := map[float64]bool{}
	for i := 0; i < 1000; i++ {
		j := JitterFor([]byte{byte(i), byte(i >> 8)})
		if j < 0 || j >= 1 {
			t.Fatalf("JitterFor out of range: %v", j)
		}
		seen[j] = true
	}
	if len(seen) < 990 {
		t.Fatalf("only %d distinct jitters of 1000", len(seen))
	}
	if JitterFor([]byte{1, 2, 3}) != JitterFor([]byte{1, 2, 3}) {
		t.Fatal("JitterFor is not stable")
	}
}
