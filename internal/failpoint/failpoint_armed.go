//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// With -tags failpoints:
//   - CERTAGENT_FAILPOINT=name:n kills the process with SIGKILL the n-th time
//     Inject(name) runs; name:n:hang blocks the goroutine there for ever
//     instead (a hung worker, for the watchdog test);
//   - CERTAGENT_FAILPOINT_LOG=path appends every point reached, one per line;
//   - SetHandler hands every point to a function instead (the simulation
//     freezes goroutines there to kill an agent in-process).
var (
	mu      sync.Mutex
	counts  = map[string]int{}
	target  string
	nth     int
	hang    bool
	logf    *os.File
	handler func(string)
)

func init() {
	if spec := os.Getenv("CERTAGENT_FAILPOINT"); spec != "" {
		parts := strings.Split(spec, ":")
		target, nth = parts[0], 1
		if len(parts) > 1 {
			if v, err := strconv.Atoi(parts[1]); err == nil {
				nth = v
			}
		}
		hang = len(parts) > 2 && parts[2] == "hang"
	}
	if p := os.Getenv("CERTAGENT_FAILPOINT_LOG"); p != "" {
		logf, _ = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	}
}

// SetHandler makes Inject call h (nil: back to the environment's plan).
func SetHandler(h func(name string)) {
	mu.Lock()
	handler = h
	mu.Unlock()
}

// Inject counts the point and acts if it is the armed one.
func Inject(name string) {
	mu.Lock()
	h := handler
	if h != nil {
		mu.Unlock()
		h(name)
		return
	}
	counts[name]++
	if logf != nil {
		fmt.Fprintln(logf, name)
	}
	armed := name == target && counts[name] == nth
	mu.Unlock()
	if !armed {
		return
	}
	if hang {
		select {} // a hung worker: never continue
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // never continue past the point
}

// Duration returns the value of the environment variable env (a Go
// duration) if it is set, else def.
func Duration(env string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(env)); err == nil {
		return v
	}
	return def
}
