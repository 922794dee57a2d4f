//go:build failpoints

package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// With -tags failpoints:
//   - CERTAGENT_FAILPOINT=name:n kills the process with SIGKILL the n-th time
//     Inject(name) runs;
//   - CERTAGENT_FAILPOINT_LOG=path appends every point reached, one per line.
var (
	mu     sync.Mutex
	counts = map[string]int{}
	target string
	nth    int
	logf   *os.File
)

func init() {
	if spec := os.Getenv("CERTAGENT_FAILPOINT"); spec != "" {
		name, n, _ := strings.Cut(spec, ":")
		target, nth = name, 1
		if v, err := strconv.Atoi(n); err == nil {
			nth = v
		}
	}
	if p := os.Getenv("CERTAGENT_FAILPOINT_LOG"); p != "" {
		logf, _ = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	}
}

// Inject counts the point and kills the process if it is the armed one.
func Inject(name string) {
	mu.Lock()
	defer mu.Unlock()
	counts[name]++
	if logf != nil {
		fmt.Fprintln(logf, name)
	}
	if name == target && counts[name] == nth {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never continue past the point
	}
}
