package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// One writer per certificate directory. Every certagent that may write
// (the daemon, run --once, renew) holds an exclusive flock on
// <certDir>/.certagent.lock while it works; the daemon holds it for its whole
// life. A second writer never runs beside the first: `certagent renew` and
// `run --once` ask a running daemon to do the work (over the control socket)
// or wait their turn, and a second daemon waits until the first is gone.
// Crash recovery (removing temporary files) happens only under the lock, so
// it can never delete another writer's file in flight.

const lockName = ".certagent.lock"

// dirLock is a held lock.
type dirLock struct{ f *os.File }

// Release drops the lock.
func (l *dirLock) Release() {
	if l != nil && l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// errLocked: another certagent holds the lock.
var errLocked = errors.New("another certagent is writing to the certificate directory")

// tryLock takes the lock on certDir without waiting; errLocked (wrapped, with
// the holder's pid when known) if another process has it.
func tryLock(certDir string) (*dirLock, error) {
	path := filepath.Join(certDir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		data, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(data))
			if holder != "" {
				return nil, fmt.Errorf("%w (pid %s holds %s)", errLocked, holder, path)
			}
			return nil, fmt.Errorf("%w (%s)", errLocked, path)
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &dirLock{f: f}, nil
}

// waitLock takes the lock, retrying every interval until ctx ends; waiting is
// called once if it has to wait.
func waitLock(ctx context.Context, certDir string, interval time.Duration, after func(time.Duration) <-chan time.Time, waiting func(error)) (*dirLock, error) {
	told := false
	for {
		l, err := tryLock(certDir)
		if err == nil || !errors.Is(err, errLocked) {
			return l, err
		}
		if !told && waiting != nil {
			waiting(err)
			told = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w; gave up waiting: %w", err, ctx.Err())
		case <-after(interval):
		}
	}
}

// lockDaemon takes the daemon's lock, waiting (and saying so in STATUS) while
// another certagent holds it.
func (a *Agent) lockDaemon(ctx context.Context, certDir string) (*dirLock, error) {
	return waitLock(ctx, certDir, 5*time.Second, a.clock.After, func(err error) {
		a.log.Warn("waiting for another certagent to finish with the certificate directory", zap.Error(err))
		a.notifier.Status("waiting: " + err.Error())
	})
}
