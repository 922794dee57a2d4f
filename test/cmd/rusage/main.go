// Command rusage runs a command and prints its wall time, CPU time, peak RSS
// and its memory at exit (anonymous, PSS, USS and RSS from
// /proc/PID/smaps_rollup) as JSON on stderr's last line.
//
// It exists because Linux carries a parent's memory high-water mark into a
// child across fork and exec: a process started directly by the (large) Go
// test binary reports at least the test binary's RSS as its own ru_maxrss.
// Started from this small program, the command's ru_maxrss is its own.
//
// The memory at exit is read while the command is stopped on its way out
// (ptrace, PTRACE_O_TRACEEXIT: its mappings are all still there), so it is
// what the whole run left mapped: for a short-lived process whose heap only
// grows, its anonymous memory at exit is its peak. Only the main thread is
// traced; it stops at exec, at its exit and for signals sent to it, which
// are passed on.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// Result is what rusage prints.
type Result struct {
	WallNS    int64 `json:"wall_ns"`
	CPUNS     int64 `json:"cpu_ns"`
	MaxRSSKiB int64 `json:"max_rss_kib"`
	// At exit, from /proc/PID/smaps_rollup: Anonymous, Pss, USS
	// (Private_Clean + Private_Dirty) and Rss. ExitRead says they were read.
	AnonKiB    int64 `json:"anon_kib"`
	PSSKiB     int64 `json:"pss_kib"`
	USSKiB     int64 `json:"uss_kib"`
	RSSExitKiB int64 `json:"rss_exit_kib"`
	ExitRead   bool  `json:"exit_read"`
	ExitCode   int   `json:"exit_code"`
}

const (
	ptraceOTraceExit = 0x40     // PTRACE_O_TRACEEXIT
	ptraceOExitKill  = 0x100000 // PTRACE_O_EXITKILL: the command dies with us
	ptraceEventExit  = 6        // PTRACE_EVENT_EXIT
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rusage COMMAND [ARG...]")
		os.Exit(2)
	}
	// Every ptrace request must come from the thread that started the tracee.
	runtime.LockOSThread()
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(2)
	}
	res, paused, err := trace(cmd.Process.Pid)
	res.WallNS = (time.Since(start) - paused).Nanoseconds() // not the time it stood stopped for the reading
	if err != nil {
		fmt.Fprintln(os.Stderr, "rusage:", err)
		os.Exit(2)
	}
	out, _ := json.Marshal(res)
	fmt.Fprintf(os.Stderr, "\n%s\n", out)
}

// trace runs the stopped tracee pid to its end, reading its memory at the
// exit stop, and returns its resource usage and how long it stood stopped
// for the reading.
func trace(pid int) (res Result, paused time.Duration, err error) {
	var ws syscall.WaitStatus
	var ru syscall.Rusage
	if _, err := syscall.Wait4(pid, &ws, 0, &ru); err != nil { // the stop after exec
		return res, 0, err
	}
	if err := syscall.PtraceSetOptions(pid, ptraceOTraceExit|ptraceOExitKill); err != nil {
		return res, 0, fmt.Errorf("PTRACE_SETOPTIONS: %w", err)
	}
	sig := 0
	for {
		if err := syscall.PtraceCont(pid, sig); err != nil {
			return res, paused, fmt.Errorf("PTRACE_CONT: %w", err)
		}
		if _, err := syscall.Wait4(pid, &ws, 0, &ru); err != nil {
			return res, paused, err
		}
		switch {
		case ws.Exited() || ws.Signaled():
			res.CPUNS = syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)
			res.MaxRSSKiB = ru.Maxrss
			res.ExitCode = ws.ExitStatus()
			if ws.Signaled() {
				res.ExitCode = 128 + int(ws.Signal())
			}
			return res, paused, nil
		case ws.Stopped() && ws.StopSignal() == syscall.SIGTRAP && ws.TrapCause() == ptraceEventExit:
			t := time.Now()
			if m, err := smapsRollup(pid); err == nil {
				res.AnonKiB, res.PSSKiB, res.RSSExitKiB = m["Anonymous"], m["Pss"], m["Rss"]
				res.USSKiB = m["Private_Clean"] + m["Private_Dirty"]
				res.ExitRead = true
			}
			paused += time.Since(t)
			sig = 0
		case ws.Stopped():
			sig = int(ws.StopSignal()) // deliver it, as without the tracer
			if ws.StopSignal() == syscall.SIGTRAP {
				sig = 0
			}
		}
	}
}

// smapsRollup reads the kB fields of /proc/PID/smaps_rollup.
func smapsRollup(pid int) (map[string]int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) == 3 && string(f[2]) == "kB" && bytes.HasSuffix(f[0], []byte(":")) {
			if v, err := strconv.ParseInt(string(f[1]), 10, 64); err == nil {
				out[string(f[0][:len(f[0])-1])] = v
			}
		}
	}
	return out, nil
}
