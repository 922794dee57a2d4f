package noderuntime

import (
	"path/filepath"
	"testing"
	"time"
)

// TestLockHostWaits: a second lockHost waits while the first holds the
// lock, and gets it once the first file is closed.
func TestLockHostWaits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "noderuntime.lock")
	first, err := lockHost(path)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		second, err := lockHost(path)
		if err == nil {
			second.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a second lockHost returned (%v) while the first held the lock", err)
	case <-time.After(300 * time.Millisecond):
	}
	first.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second lockHost still waits 10 s after the first released the lock")
	}
}
