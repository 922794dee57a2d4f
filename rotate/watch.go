package rotate

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"k8s.io/utils/clock"
)

// WatchDirs watches dirs (not files: certagent and others replace files by
// rename, which a file watch loses) and sends on the returned channel once
// per burst of events, debounce after the last one (and at most ten times
// debounce after the first, however long the burst), as clk measures it.
// The channel has room for one pending notification; notifications are
// coalesced, never queued. Watching stops when ctx ends.
func WatchDirs(ctx context.Context, log *zap.Logger, clk clock.Clock, debounce time.Duration, dirs ...string) (<-chan struct{}, error) {
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
		d := debouncer{log: log, clk: clk, debounce: debounce, out: out}
		d.run(ctx, w.Events, w.Errors)
	}()
	return out, nil
}

// debouncer turns file events into notifications on out: one per burst.
type debouncer struct {
	log      *zap.Logger
	clk      clock.Clock
	debounce time.Duration
	out      chan<- struct{}

	timer      clock.Timer
	fire       <-chan time.Time
	burstStart time.Time // first event of the burst not yet reported
	events     int
	lastPath   string
}

// run reads events and errors until ctx ends or either channel closes.
func (d *debouncer) run(ctx context.Context, events <-chan fsnotify.Event, errs <-chan error) {
	defer func() {
		if d.timer != nil {
			d.timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			d.event(ev.Name)
		case err, ok := <-errs:
			if !ok {
				return
			}
			d.log.Warn("file watcher", zap.Error(err))
		case <-d.fire:
			d.notify()
		}
	}
}

// event adds one event to the burst and sets the timer: debounce after the
// last event, but at the latest maxBurst after the burst's first, so that a
// file that never stops changing does not starve the others.
func (d *debouncer) event(path string) {
	now := d.clk.Now()
	if d.events == 0 {
		d.burstStart = now
	}
	d.events, d.lastPath = d.events+1, path
	wait := min(d.debounce, d.burstStart.Add(maxBurst(d.debounce)).Sub(now))
	if d.timer == nil {
		d.timer = d.clk.NewTimer(wait)
	} else {
		d.timer.Reset(wait)
	}
	d.fire = d.timer.C()
}

// notify reports the burst: one line per burst (a line per event could feed
// itself: a debug log written into a watched directory), and a notification
// unless one is already pending.
func (d *debouncer) notify() {
	d.fire = nil
	d.log.Debug("files changed", zap.Int("events", d.events), zap.String("last", d.lastPath))
	d.events = 0
	select {
	case d.out <- struct{}{}:
	default: // one is already pending
	}
}

// maxBurst is the longest a burst of events is coalesced.
func maxBurst(debounce time.Duration) time.Duration { return 10 * debounce }
