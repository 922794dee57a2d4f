package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
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

func TestWriteFileFailureLeavesOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "kubelet.conf")
	if err := WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Writing into a path whose parent is a file fails before touching p.
	if err := WriteFile(filepath.Join(p, "child"), []byte("x"), 0o600); err == nil {
		t.Fatal("expected an error writing below a regular file")
	}
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Fatalf("content = %q, want old", got)
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
