package rotate

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestWatchDirsDebouncesRenames(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := WatchDirs(ctx, zap.NewNop(), 50*time.Millisecond, dir, dir)
	if err != nil {
		t.Fatal(err)
	}
	// A burst: write a temp file and rename it over the target, as an atomic write does.
	for i := 0; i < 5; i++ {
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "kubelet.conf")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for a rename into the watched directory")
	}
	select {
	case <-ch:
		t.Fatal("a burst of events gave more than one notification")
	case <-time.After(200 * time.Millisecond):
	}
	// Removal is noticed too.
	if err := os.Remove(filepath.Join(dir, "kubelet.conf")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no notification for a removal")
	}
}

// TestWatchDirsReportsDuringEndlessWrites: a file in a watched directory that
// is written without pause (say a log) must not starve the notification a
// dropped bootstrap kubeconfig needs: a burst is reported at most ten
// debounce intervals after it began.
func TestWatchDirsReportsDuringEndlessWrites(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const debounce = 50 * time.Millisecond
	ch, err := WatchDirs(ctx, zap.NewNop(), debounce, dir)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		f, err := os.Create(filepath.Join(dir, "chatty.log"))
		if err != nil {
			return
		}
		defer f.Close()
		for ctx.Err() == nil {
			_, _ = f.WriteString("x\n")
			time.Sleep(5 * time.Millisecond) // never a debounce-long pause
		}
	}()
	start := time.Now()
	for i := 0; i < 3; i++ {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("notification %d: none after 5 s of endless writes", i+1)
		}
	}
	if took := time.Since(start); took > 3*maxBurst(debounce)+time.Second {
		t.Fatalf("3 notifications took %s, want about %s each", took, maxBurst(debounce))
	}
}

func TestWatchDirsMissingDir(t *testing.T) {
	if _, err := WatchDirs(context.Background(), zap.NewNop(), time.Millisecond, filepath.Join(t.TempDir(), "nope")); err == nil {
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
