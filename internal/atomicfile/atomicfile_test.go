package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestWriteFileModeAndContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key.pem")
	for _, tc := range []struct {
		name string
		data string
		perm os.FileMode
	}{
		{"create", "first", 0o600},
		{"replace", "second", 0o600},
		{"other mode", "third", 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := WriteFile(p, []byte(tc.data), tc.perm); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tc.data {
				t.Fatalf("content = %q, %v; want %q", got, err, tc.data)
			}
			fi, _ := os.Stat(p)
			if fi.Mode().Perm() != tc.perm {
				t.Fatalf("mode = %v, want %v", fi.Mode().Perm(), tc.perm)
			}
			assertNoTemp(t, dir)
		})
	}
}

// TestWriteFileFailureLeavesOldContent: a failure at any step after the
// temporary file exists (a full disk, an I/O error) leaves the old content
// and no temporary file behind.
func TestWriteFileFailureLeavesOldContent(t *testing.T) {
	for _, step := range []string{"write", "sync", "close", "rename"} {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "kubelet.conf")
			if err := WriteFile(p, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			failAt = func(s string) error {
				if s == step {
					return syscall.ENOSPC
				}
				return nil
			}
			defer func() { failAt = nil }()
			err := WriteFile(p, []byte("new"), 0o600)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("WriteFile failing at %s returned %v", step, err)
			}
			if got, _ := os.ReadFile(p); string(got) != "old" {
				t.Fatalf("content = %q, want old", got)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Fatalf("%d entries left in the directory, want only kubelet.conf", len(entries))
			}
		})
	}
}

func TestSymlinkReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "current.pem")
	for _, target := range []string{"a.pem", "b.pem"} {
		if err := os.WriteFile(filepath.Join(dir, target), []byte(target), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		got, err := os.Readlink(link)
		if err != nil || got != target {
			t.Fatalf("link -> %q, %v; want %q", got, err, target)
		}
	}
	assertNoTemp(t, dir)
}

func TestCleanupRemovesOnlyTemporaries(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "kubelet-client-current.pem")
	stale := filepath.Join(dir, ".kubelet.conf"+tempMarker+"123")
	for _, p := range []string{keep, stale} {
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := Cleanup(dir)
	if err != nil || len(removed) != 1 || removed[0] != filepath.Base(stale) {
		t.Fatalf("Cleanup = %v, %v", removed, err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("kept file gone: %v", err)
	}
	if r, err := Cleanup(filepath.Join(dir, "missing")); err != nil || r != nil {
		t.Fatalf("Cleanup(missing) = %v, %v", r, err)
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if IsTemp(e.Name()) {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}
}

// TestModeIsSetBeforeTheFirstByte: the temporary file already has its final
// mode when the first byte is written, whatever the umask, so a key is
// never readable by others, not even for an instant.
func TestModeIsSetBeforeTheFirstByte(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, perm := range []os.FileMode{0o600, 0o644} {
		var seen os.FileMode
		var size int64 = -1
		failAt = func(step string) error {
			if step == "write" {
				entries, _ := os.ReadDir(dir)
				for _, e := range entries {
					if IsTemp(e.Name()) {
						fi, _ := os.Stat(filepath.Join(dir, e.Name()))
						seen, size = fi.Mode().Perm(), fi.Size()
					}
				}
			}
			return nil
		}
		err := WriteFile(filepath.Join(dir, "key.pem"), []byte("secret"), perm)
		failAt = nil
		if err != nil {
			t.Fatal(err)
		}
		if seen != perm || size != 0 {
			t.Fatalf("before the first byte the temporary file had mode %v and %d bytes, want %v and 0", seen, size, perm)
		}
	}
}

// TestStageThenCommit: a staged file is written and synced beside its path,
// which stays as it was until Commit; Abort leaves it as it was too.
func TestStageThenCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "kubelet.conf")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Stage(p, []byte("new"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Fatalf("after Stage %s holds %q, want the old content", p, got)
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("after Commit %s holds %q, want the new content", p, got)
	}
	assertNoTemp(t, dir)

	s, err = Stage(p, []byte("newer"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s.Abort()
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("after Abort %s holds %q, want what it held", p, got)
	}
	assertNoTemp(t, dir)

	failAt = func(step string) error {
		if step == "rename" {
			return syscall.EIO
		}
		return nil
	}
	defer func() { failAt = nil }()
	if s, err = Stage(p, []byte("newest"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Commit failing at rename returned %v", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "new" {
		t.Fatalf("after a failed Commit %s holds %q, want what it held", p, got)
	}
	assertNoTemp(t, dir)
}

// TestWriteFileIntoANewDirectoryWaitsForIt: MkdirAll returns before the
// parents of the directories it made are synced, and a file written into
// them is not reported durable (WriteFile does not return) until they are;
// a parent sync that failed is tried again, and its error reported.
func TestWriteFileIntoANewDirectoryWaitsForIt(t *testing.T) {
	base := t.TempDir()
	newDir := filepath.Join(base, "a", "pki")
	release := make(chan struct{})
	failParent := false
	failAt = func(step string) error {
		if step == "syncdir "+filepath.Join(base, "a") { // the sync that makes pki durable
			<-release
			if failParent {
				return syscall.EIO
			}
		}
		return nil
	}
	defer func() { failAt = nil }()
	if err := MkdirAll(newDir, 0o700); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- WriteFile(filepath.Join(newDir, "pending.key"), []byte("k"), 0o600) }()
	select {
	case err := <-done:
		t.Fatalf("WriteFile returned (%v) before the new directory was synced into its parent", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// The same with a parent sync that fails: SyncDir tries it again.
	newDir = filepath.Join(base, "a", "pki2")
	release = make(chan struct{})
	close(release)
	failParent = true
	if err := MkdirAll(newDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(filepath.Join(newDir, "pending.key"), []byte("k"), 0o600); !errors.Is(err, syscall.EIO) {
		t.Fatalf("WriteFile into a directory whose parent cannot be synced returned %v, want the sync's error", err)
	}
	failParent = false
	if err := WriteFile(filepath.Join(newDir, "pending.key"), []byte("k"), 0o600); err != nil {
		t.Fatalf("once the parent syncs: %v", err)
	}
}
