// Package atomicfile writes files so that a crash at any instant leaves either
// the old content or the new content at the final path, never a mix.
//
// The recipe: a temporary file in the same directory (created with its final
// mode, so a key is never readable by others even for an instant), write,
// fsync, rename over the target, fsync the directory. Temporary files carry a
// recognisable name so that Cleanup can remove the ones a crash left behind.
//
// It is the node's file writing, for any package that writes (node side): it
// knows no certificate or kubeconfig, takes no lock and decides no path.
package atomicfile

import (
	"errors"
	"fmt"
	"github.com/certagent/certagent/internal/failpoint"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// tempMarker is part of every temporary name this package creates.
const tempMarker = ".tmp-certagent-"

// failAt, set only by tests, makes WriteFile fail at a step ("write",
// "sync", "close", "rename", "syncdir <dir>") as a full disk or an I/O
// error would (or holds it up).
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
	p, err := Stage(path, data, perm)
	if err != nil {
		return err
	}
	return p.Commit()
}

// Staged is a file written and synced under a temporary name beside its
// path, which is untouched until Commit: the slow part of WriteFile, done
// ahead, while what must be durable before path changes is made so.
type Staged struct {
	tmp, path, dir string
}

// Stage writes data to a temporary file beside path, created with perm, and
// syncs it. Commit or Abort it; a crash leaves a temporary file for Cleanup.
func Stage(path string, data []byte, perm os.FileMode) (*Staged, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("creating temporary file for %s: %w", path, err)
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
		return nil, fmt.Errorf("setting mode of %s: %w", tmp, err)
	}
	if err := check("write"); err != nil {
		return nil, fmt.Errorf("writing %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return nil, fmt.Errorf("writing %s: %w", tmp, err)
	}
	failpoint.Inject("atomicfile.written")
	if err := check("sync"); err != nil {
		return nil, fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err := check("close"); err != nil {
		return nil, fmt.Errorf("closing %s: %w", tmp, err)
	}
	committed = true
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("closing %s: %w", tmp, err)
	}
	failpoint.Inject("atomicfile.synced")
	return &Staged{tmp: tmp, path: path, dir: dir}, nil
}

// Commit renames the staged file over its path and fsyncs the directory.
// After a failed rename the temporary file is gone and path is as it was.
func (s *Staged) Commit() error {
	if err := check("rename"); err != nil {
		s.Abort()
		return fmt.Errorf("renaming %s to %s: %w", s.tmp, s.path, err)
	}
	if err := os.Rename(s.tmp, s.path); err != nil {
		s.Abort()
		return fmt.Errorf("renaming %s to %s: %w", s.tmp, s.path, err)
	}
	failpoint.Inject("atomicfile.renamed")
	return SyncDir(s.dir)
}

// Abort removes the staged file; path stays as it was.
func (s *Staged) Abort() { _ = os.Remove(s.tmp) }

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

// SyncDir fsyncs a directory so that renames and removals in it are durable;
// for a directory MkdirAll created, its own entry (and its new parents') too.
func SyncDir(dir string) error {
	if err := syncDir(dir); err != nil {
		return err
	}
	return waitCreated(dir)
}

func syncDir(dir string) error {
	if err := check("syncdir " + dir); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
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

// A directory MkdirAll creates is durable once its parent is synced. That
// sync runs while the caller goes on (writing the first file into the new
// directory, typically: a pending key, whose own syncs it overlaps), and
// SyncDir of the directory or anything below it waits for it: a file written
// into a new directory with WriteFile is durable with the directory when
// WriteFile returns.
var (
	createdMu sync.Mutex
	// created maps a directory MkdirAll made (cleaned, absolute) to the sync of its parent.
	created = map[string]*parentSync{}
)

type parentSync struct {
	done chan struct{}
	err  error
}

// syncParentLater starts the sync of the parent of dir, which MkdirAll just created.
func syncParentLater(dir string) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	ps := &parentSync{done: make(chan struct{})}
	createdMu.Lock()
	created[abs] = ps
	createdMu.Unlock()
	go func() {
		ps.err = syncDir(filepath.Dir(abs))
		close(ps.done)
		if ps.err == nil {
			createdMu.Lock()
			if created[abs] == ps {
				delete(created, abs)
			}
			createdMu.Unlock()
		}
	}()
}

// waitCreated waits for the parent syncs of dir and its ancestors that
// MkdirAll started; one that failed is tried again here.
func waitCreated(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil
	}
	for d := abs; ; d = filepath.Dir(d) {
		createdMu.Lock()
		ps := created[d]
		createdMu.Unlock()
		if ps != nil {
			<-ps.done
			if ps.err != nil {
				if err := syncDir(filepath.Dir(d)); err != nil {
					return err
				}
				createdMu.Lock()
				if created[d] == ps {
					delete(created, d)
				}
				createdMu.Unlock()
			}
		}
		if filepath.Dir(d) == d {
			return nil
		}
	}
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
// loss with them: the fsyncs run while the caller goes on, and SyncDir of
// path (which WriteFile and Commit end with) waits for them.
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
	syncParentLater(path)
	return nil
}
