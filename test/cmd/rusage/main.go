// Command rusage runs a command and prints its wall time, CPU time and peak
// RSS as JSON on stderr's last line.
//
// It exists because Linux carries a parent's memory high-water mark into a
// child across fork and exec: a process started directly by the (large) Go
// test binary reports at least the test binary's RSS as its own ru_maxrss.
// Started from this small program, the command's ru_maxrss is its own.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Result is what rusage prints.
type Result struct {
	WallNS    int64 `json:"wall_ns"`
	CPUNS     int64 `json:"cpu_ns"`
	MaxRSSKiB int64 `json:"max_rss_kib"`
	ExitCode  int   `json:"exit_code"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rusage COMMAND [ARG...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if cmd.ProcessState == nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(2)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	out, _ := json.Marshal(Result{
		WallNS:    wall.Nanoseconds(),
		CPUNS:     (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Nanoseconds(),
		MaxRSSKiB: ru.Maxrss,
		ExitCode:  cmd.ProcessState.ExitCode(),
	})
	fmt.Fprintf(os.Stderr, "\n%s\n", out)
}
