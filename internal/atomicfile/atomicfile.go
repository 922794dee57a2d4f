// Package atomicfile writes files so that a crash at any instant leaves either
// the old content or the new content at the final path, never a mix.
//
// The recipe: a temporary file in the same directory (created with its final
// mode, so a key is never readable by others even for an instant), write,
// fsync, rename over the target, fsync the directory. Temporary files carry a
// recognisable name so that Cleanup can remove the ones a crash left behind.
package atomicfile

import (
	"errors"
	"fmt"
	"github.com/certagent/certagent/internal/failpoint"
	"os"
	"path/filepath"
	"strings"
)

// tempMarker is part of every temporary name this package creates.
const tempMarker = ".tmp-certagent-"

// failAt, set only by tests, makes WriteFile fail at a step ("write",
// "sync", "close", "rename") as a full disk or an I/O error would.
var failAt func(step string) error

func check(step string) error {
	if failAt != nil {
		return failAt(step)
	}
	return nil
}

// WriteFile atomically replaces path with data. The file is created with perm
// (before any byte is written) and the directory is fsynced after the rename.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempMarker+"*")
	if err != nil {
		return fmt.Errorf("creating temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	failpoint.Inject("atomicfile.created")
	committed := false
	defer func() {
		if !committed {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	// CreateTemp makes the file 0600; set the final mode before writing content.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("setting mode of %s: %w", tmp, err)
	}
	if err := check("write"); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	failpoint.Inject("atomicfile.written")
	if err := check("sync"); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := check("close"); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp, err)
	}
	failpoint.Inject("atomicfile.synced")
	if err := check("rename"); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	committed = true
	failpoint.Inject("atomicfile.renamed")
	return SyncDir(dir)
}

// Symlink atomically makes path a symbolic link to target, replacing whatever
// path was (a link or a file), and fsyncs the directory.
func Symlink(target, path string) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	for attempt := 0; ; attempt++ {
		tmp := filepath.Join(dir, fmt.Sprintf(".%s%s%d-%d", base, tempMarker, os.Getpid(), attempt))
		err := os.Symlink(target, tmp)
		if errors.Is(err, os.ErrExist) && attempt < 10 {
			_ = os.Remove(tmp) // a leftover from a crashed process with our pid
			continue
		}
		if err != nil {
			return fmt.Errorf("creating symlink %s: %w", tmp, err)
		}
		failpoint.Inject("symlink.created")
		if err := os.Rename(tmp, path); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("renaming symlink %s to %s: %w", tmp, path, err)
		}
		return SyncDir(dir)
	}
}

// SyncDir fsyncs a directory so that renames and removals in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// IsTemp reports whether name (a base name) is one of this package's temporary files.
func IsTemp(name string) bool { return strings.Contains(name, tempMarker) }

// Cleanup removes the temporary files a crashed writer left in dir and
// returns their names. A missing directory is not an error.
func Cleanup(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var removed []string
	for _, e := range entries {
		if !IsTemp(e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("removing stale temporary file: %w", err)
		}
		removed = append(removed, e.Name())
	}
	return removed, nil
}

// MkdirAll creates path and any missing parents with perm, as os.MkdirAll
// does, and fsyncs the parent of each directory it creates, so that a
// directory made just before files are written into it survives a power
// loss with them.
func MkdirAll(path string, perm os.FileMode) error {
	path = filepath.Clean(path)
	if fi, err := os.Stat(path); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s exists and is not a directory", path)
		}
		return nil
	}
	if parent := filepath.Dir(path); parent != path {
		if err := MkdirAll(parent, perm|0o700); err != nil {
			return err
		}
	}
	if err := os.Mkdir(path, perm); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return SyncDir(filepath.Dir(path))
}
