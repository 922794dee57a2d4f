package observe

import (
	"bytes"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
)

// The standard process_* and go_* series, with client_golang's names, types
// and meaning (its process and Go collectors), read from /proc/self and
// runtime/metrics at every scrape; and beside the resident memory, what of it
// the node pays for this process alone (docs/metrics.md, "Memory"): its
// anonymous memory, PSS and USS. Those three cost a read of
// /proc/self/smaps_rollup per scrape (tens of microseconds: the kernel walks
// the process's page tables).

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture; client_golang's procfs assumes the same).
const userHZ = 100

// goMetrics are read from runtime/metrics, as client_golang's Go collector does.
var goMetrics = []struct{ runtimeName, name, help string }{
	{"/memory/classes/heap/objects:bytes", "go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use."},
	{"/memory/classes/total:bytes", "go_memstats_sys_bytes", "Number of bytes obtained from system."},
	{"/sched/gomaxprocs:threads", "go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously."},
}

func writeProcessMetrics(e *Expo) {
	e.family("go_goroutines", "Number of goroutines that currently exist.", "gauge")
	e.sample("go_goroutines", float64(runtime.NumGoroutine()))
	e.family("go_info", "Information about the Go environment.", "gauge")
	e.sample("go_info", 1, "version", runtime.Version())
	samples := make([]metrics.Sample, len(goMetrics))
	for i, m := range goMetrics {
		samples[i].Name = m.runtimeName
	}
	metrics.Read(samples)
	for i, m := range goMetrics {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			continue
		}
		e.family(m.name, m.help, "gauge")
		e.sample(m.name, float64(samples[i].Value.Uint64()))
	}

	if st, err := readProcStat(); err == nil {
		e.family("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter")
		e.sample("process_cpu_seconds_total", float64(st.utime+st.stime)/userHZ)
		e.family("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge")
		e.sample("process_resident_memory_bytes", float64(st.rssPages*uint64(os.Getpagesize())))
		e.family("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge")
		e.sample("process_virtual_memory_bytes", float64(st.vsize))
		if bt, err := bootTime(); err == nil {
			e.family("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge")
			e.sample("process_start_time_seconds", float64(bt)+float64(st.starttime)/userHZ)
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		e.family("process_open_fds", "Number of open file descriptors.", "gauge")
		e.sample("process_open_fds", float64(len(fds)))
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		e.family("process_max_fds", "Maximum number of open file descriptors.", "gauge")
		e.sample("process_max_fds", float64(rl.Cur))
	}
	if n, err := procStatusField("Threads:"); err == nil {
		e.family("go_threads", "Number of OS threads created.", "gauge")
		e.sample("go_threads", float64(n))
	}
	writeMemoryMetrics(e)
}

// memorySeries are the memory series beside process_resident_memory_bytes,
// each a field of /proc/self/smaps_rollup (kB) or a sum of them.
var memorySeries = []struct {
	name, help string
	fields     []string
}{
	{"certagent_process_anonymous_memory_bytes",
		"Resident anonymous memory in bytes (heap, stacks, runtime data): what the node pays for this process alone.",
		[]string{"Anonymous"}},
	{"certagent_process_proportional_memory_bytes",
		"Proportional set size in bytes: resident memory with each page shared with other processes counted in shares.",
		[]string{"Pss"}},
	{"certagent_process_unique_memory_bytes",
		"Unique set size in bytes: resident memory no other process maps.",
		[]string{"Private_Clean", "Private_Dirty"}},
}

func writeMemoryMetrics(e *Expo) {
	data, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return // a kernel before 4.14, or no /proc
	}
	kb := parseKBFields(data)
	for _, m := range memorySeries {
		var sum uint64
		for _, f := range m.fields {
			v, ok := kb[f]
			if !ok {
				return
			}
			sum += v
		}
		e.family(m.name, m.help, "gauge")
		e.sample(m.name, float64(sum*1024))
	}
}

// parseKBFields reads the "Name: N kB" lines of a /proc file.
func parseKBFields(data []byte) map[string]uint64 {
	out := map[string]uint64{}
	for _, l := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(l, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if v, err := strconv.ParseUint(f[0], 10, 64); err == nil {
			out[name] = v
		}
	}
	return out
}

type procStat struct{ utime, stime, starttime, vsize, rssPages uint64 }

// readProcStat parses /proc/self/stat (proc(5)).
func readProcStat() (procStat, error) {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(data)
}

func parseProcStat(data []byte) (procStat, error) {
	// The command name (field 2) is in parentheses and may hold spaces or
	// parentheses: the fields start after the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, strconv.ErrSyntax
	}
	f := strings.Fields(string(data[i+1:])) // f[0] is field 3 (state)
	if len(f) < 22 {
		return procStat{}, strconv.ErrSyntax
	}
	var out procStat
	for _, x := range []struct {
		field int
		to    *uint64
	}{{14, &out.utime}, {15, &out.stime}, {22, &out.starttime}, {23, &out.vsize}, {24, &out.rssPages}} {
		v, err := strconv.ParseUint(f[x.field-3], 10, 64)
		if err != nil {
			return procStat{}, err
		}
		*x.to = v
	}
	return out, nil
}

// bootTime is btime of /proc/stat: the boot time, Unix seconds.
func bootTime() (uint64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, strconv.ErrSyntax
}

// procStatusField is the number after key in /proc/self/status ("VmRSS:"
// gives kB, "Threads:" a count).
func procStatusField(key string) (uint64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return strconv.ParseUint(f[0], 10, 64)
			}
		}
	}
	return 0, strconv.ErrSyntax
}
