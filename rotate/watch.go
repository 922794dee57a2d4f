package rotate

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// WatchDirs watches dirs (not files: certagent and others replace files by
// rename, which a file watch loses) and sends on the returned channel once
// per burst of events, debounce after the last one (and at most ten times
// debounce after the first, however long the burst). The channel has room for
// one pending notification; notifications are coalesced, never queued.
// Watching stops when ctx ends.
func WatchDirs(ctx context.Context, log *zap.Logger, debounce time.Duration, dirs ...string) (<-chan struct{}, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("starting file watcher: %w", err)
	}
	var watched []string
	for _, d := range dirs {
		d = filepath.Clean(d)
		if slices.Contains(watched, d) {
			continue
		}
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("watching %s: %w", d, err)
		}
		watched = append(watched, d)
	}
	out := make(chan struct{}, 1)
	go func() {
		defer w.Close()
		var timer *time.Timer
		var fire <-chan time.Time
		var burstStart time.Time // first event of the burst not yet reported
		events, lastPath := 0, ""
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				now := time.Now()
				if events == 0 {
					burstStart = now
				}
				events, lastPath = events+1, ev.Name
				// Debounce after the last event, but report a burst at the
				// latest maxBurst after its first event: a file that never
				// stops changing must not starve the others.
				wait := min(debounce, burstStart.Add(maxBurst(debounce)).Sub(now))
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				fire = timer.C
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("file watcher", zap.Error(err))
			case <-fire:
				fire = nil
				// One line per burst: a line per event could feed itself
				// (a debug log written into a watched directory).
				log.Debug("files changed", zap.Int("events", events), zap.String("last", lastPath))
				events = 0
				select {
				case out <- struct{}{}:
				default: // one is already pending
				}
			}
		}
	}()
	return out, nil
}

// maxBurst is the longest a burst of events is coalesced.
func maxBurst(debounce time.Duration) time.Duration { return 10 * debounce }
