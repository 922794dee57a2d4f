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
// per burst of events, debounce after the last one. The channel has room for
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
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				log.Debug("file event", zap.String("path", ev.Name), zap.String("op", ev.Op.String()))
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("file watcher", zap.Error(err))
			case <-fire:
				fire = nil
				select {
				case out <- struct{}{}:
				default: // one is already pending
				}
			}
		}
	}()
	return out, nil
}
