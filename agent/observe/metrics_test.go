package observe

import (
	"maps"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// packageInit is the real time the test binary initialised.
var packageInit = time.Now()

// TestProcessMetricsAreThisProcesss: the process series are this process's,
// read at the scrape: its RSS and anonymous memory as /proc/self/status says
// them, anonymous <= USS <= PSS <= RSS, its start time.
func TestProcessMetricsAreThisProcesss(t *testing.T) {
	var e Expo
	writeProcessMetrics(&e)
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(e.Bytes())))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, e.Bytes())
	}
	gauge := func(name string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil || len(f.GetMetric()) != 1 {
			t.Fatalf("no series %s", name)
		}
		return f.GetMetric()[0].GetGauge().GetValue()
	}
	rss := gauge("process_resident_memory_bytes")
	if kb, err := procStatusField("VmRSS:"); err != nil || math.Abs(rss-float64(kb*1024)) > 0.2*float64(kb*1024) {
		t.Errorf("process_resident_memory_bytes = %v, /proc/self/status says VmRSS %d kB (%v)", rss, kb, err)
	}
	// What of it is this process's own: anonymous memory, PSS, USS.
	anon := gauge("certagent_process_anonymous_memory_bytes")
	if kb, err := procStatusField("RssAnon:"); err != nil || math.Abs(anon-float64(kb*1024)) > 0.2*float64(kb*1024) {
		t.Errorf("certagent_process_anonymous_memory_bytes = %v, /proc/self/status says RssAnon %d kB (%v)", anon, kb, err)
	}
	pss, uss := gauge("certagent_process_proportional_memory_bytes"), gauge("certagent_process_unique_memory_bytes")
	if !(anon <= uss && uss <= pss && pss <= 1.2*rss) {
		t.Errorf("anonymous %v, USS %v, PSS %v, RSS %v bytes: want anonymous <= USS <= PSS <= RSS", anon, uss, pss, rss)
	}
	if procs := gauge("go_sched_gomaxprocs_threads"); procs != float64(runtime.GOMAXPROCS(0)) {
		t.Errorf("go_sched_gomaxprocs_threads = %v, runtime.GOMAXPROCS says %d", procs, runtime.GOMAXPROCS(0))
	}
	start := gauge("process_start_time_seconds")
	if s := float64(packageInit.Unix()); start > s+1 || start < s-60 {
		t.Errorf("process_start_time_seconds = %v, the test binary initialised at %v", start, s)
	}
}

func TestKubeletTTLSeconds(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name     string
		notAfter time.Time
		want     float64
	}{
		{"none", time.Time{}, math.Inf(1)},
		{"whole seconds", now.Add(90*time.Second + 900*time.Millisecond), 90},
		{"expired", now.Add(-90*time.Second - 900*time.Millisecond), -90},
		{"a year", now.Add(365 * 24 * time.Hour), 365 * 24 * 3600},
	} {
		if got := kubeletTTLSeconds(c.notAfter, now); got != c.want {
			t.Errorf("%s: kubeletTTLSeconds = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestParseKBFields(t *testing.T) {
	const rollup = `55d5c2006000-7fffc2d00000 ---p 00000000 00:00 0                          [rollup]
Rss:                1736 kB
Pss:                 354 kB
Private_Clean:        48 kB
Private_Dirty:       116 kB
Anonymous:           116 kB
VmFlags: rd wr
Threads:	3
`
	got := parseKBFields([]byte(rollup))
	want := map[string]uint64{"Rss": 1736, "Pss": 354, "Private_Clean": 48, "Private_Dirty": 116, "Anonymous": 116}
	if !maps.Equal(got, want) {
		t.Errorf("parseKBFields = %v, want %v", got, want)
	}
}

func TestParseProcStat(t *testing.T) {
	for _, c := range []struct {
		name, line string
		want       procStat
		bad        bool
	}{
		{"plain", "4242 (certagent) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 30 0 0 20 0 9 0 12345 1300000000 4200 18446744073709551615", procStat{utime: 250, stime: 30, starttime: 12345, vsize: 1300000000, rssPages: 4200}, false},
		{"name with spaces and parens", "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 99 4096 3 0", procStat{utime: 1, stime: 2, starttime: 99, vsize: 4096, rssPages: 3}, false},
		{"short", "7 (x) R 1 2 3", procStat{}, true},
		{"no name", "garbage", procStat{}, true},
	} {
		got, err := parseProcStat([]byte(c.line))
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("%s: %+v, %v", c.name, got, err)
		}
	}
}

// TestExpositionFormat: escaping and special values as Prometheus' parser
// reads them back.
func TestExpositionFormat(t *testing.T) {
	var e Expo
	e.family("x_info", "help with \\ and\nnewline", "gauge")
	e.sample("x_info", math.Inf(1), "v", "a\"quote\" \\ back\nslash")
	e.sample("x_info", -1.5e-7, "v", "b")
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(e.buf.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, e.buf.String())
	}
	f := fams["x_info"]
	if f.GetHelp() != "help with \\ and\nnewline" || len(f.GetMetric()) != 2 {
		t.Fatalf("%v", f)
	}
	m := f.GetMetric()[0]
	if m.GetLabel()[0].GetValue() != "a\"quote\" \\ back\nslash" || !math.IsInf(m.GetGauge().GetValue(), 1) {
		t.Errorf("%v", m)
	}
	if v := f.GetMetric()[1].GetGauge().GetValue(); v != -1.5e-7 {
		t.Errorf("%v", v)
	}
}
