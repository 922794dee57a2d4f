package agent

import (
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/bootstrap"
)

// packageInit is the real time the test binary initialised (outside any
// synctest bubble, whose clock starts in 2000).
var packageInit = time.Now()

// scrape parses the agent's /metrics with Prometheus' text parser.
func scrape(t *testing.T, a *Agent) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := probe(a, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return fams
}

// sample is the value of the series name{certificate=cert} ("" for no
// label) and its type; it fails the test if it is missing.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name, cert string) (float64, dto.MetricType) {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no series %s", name)
	}
	for _, m := range f.GetMetric() {
		got := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "certificate" {
				got = l.GetValue()
			}
		}
		if got != cert {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), f.GetType()
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), f.GetType()
		default:
			return m.GetUntyped().GetValue(), f.GetType()
		}
	}
	t.Fatalf("no series %s{certificate=%q}", name, cert)
	return 0, 0
}

// TestMetricsKubeletCompatible: the kubelet's certificate-manager series have
// its names, types and values (whole seconds until NotAfter of the file on
// disk; renewal errors counted); a denied serving CSR shows in
// certagent_csr_denied_total and in the kubelet's server renew-error
// counter; go_* and process_* come from client_golang's collectors.
func TestMetricsKubeletCompatible(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.start()
		fams := scrape(t, f.agent)
		now := f.clk.Now()
		for _, c := range []struct {
			series string
			kind   bootstrap.Kind
		}{
			{"kubelet_certificate_manager_client_ttl_seconds", bootstrap.Client},
			{"kubelet_certificate_manager_server_ttl_seconds", bootstrap.Serving},
		} {
			v, typ := sample(t, fams, c.series, "")
			want := math.Trunc(f.current(c.kind).NotAfter.Sub(now).Seconds())
			if typ != dto.MetricType_GAUGE || v != want {
				t.Errorf("%s = %v (%v), want gauge %v", c.series, v, typ, want)
			}
		}
		for _, name := range []string{"kubelet_certificate_manager_client_expiration_renew_errors", "kubelet_server_expiration_renew_errors"} {
			if v, typ := sample(t, fams, name, ""); typ != dto.MetricType_COUNTER || v != 0 {
				t.Errorf("%s = %v (%v), want counter 0", name, v, typ)
			}
		}
		if v, _ := sample(t, fams, "certagent_ready", ""); v != 1 {
			t.Errorf("certagent_ready = %v", v)
		}
		for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"} {
			if v, _ := sample(t, fams, name, ""); v <= 0 {
				t.Errorf("%s = %v, want a real value", name, v)
			}
		}
		if fams["certagent_build_info"] == nil {
			t.Error("no certagent_build_info")
		}
		// The process series are this process's, read now.
		rss, _ := sample(t, fams, "process_resident_memory_bytes", "")
		if kb, err := procStatusField("VmRSS:"); err != nil || math.Abs(rss-float64(kb*1024)) > 0.2*float64(kb*1024) {
			t.Errorf("process_resident_memory_bytes = %v, /proc/self/status says VmRSS %d kB (%v)", rss, kb, err)
		}
		// What of it is this process's own: anonymous memory, PSS, USS.
		anon, _ := sample(t, fams, "certagent_process_anonymous_memory_bytes", "")
		if kb, err := procStatusField("RssAnon:"); err != nil || math.Abs(anon-float64(kb*1024)) > 0.2*float64(kb*1024) {
			t.Errorf("certagent_process_anonymous_memory_bytes = %v, /proc/self/status says RssAnon %d kB (%v)", anon, kb, err)
		}
		pss, _ := sample(t, fams, "certagent_process_proportional_memory_bytes", "")
		uss, _ := sample(t, fams, "certagent_process_unique_memory_bytes", "")
		if !(anon <= uss && uss <= pss && pss <= 1.2*rss) {
			t.Errorf("anonymous %v, USS %v, PSS %v, RSS %v bytes: want anonymous <= USS <= PSS <= RSS", anon, uss, pss, rss)
		}
		start, _ := sample(t, fams, "process_start_time_seconds", "")
		if s := float64(packageInit.Unix()); start > s+1 || start < s-60 {
			t.Errorf("process_start_time_seconds = %v, the test binary initialised at %v", start, s)
		}

		f.deny.Store(true)
		f.advance(23*time.Hour + time.Minute) // the serving renewal is due and denied
		fams = scrape(t, f.agent)
		if v, _ := sample(t, fams, "certagent_csr_denied_total", "server"); v < 1 {
			t.Errorf("certagent_csr_denied_total{server} = %v after a denial", v)
		}
		if v, _ := sample(t, fams, "certagent_csr_denied_total", "client"); v != 0 {
			t.Errorf("certagent_csr_denied_total{client} = %v", v)
		}
		errs, _ := sample(t, fams, "certagent_renewal_errors_total", "server")
		if v, _ := sample(t, fams, "kubelet_server_expiration_renew_errors", ""); v < 1 || v != errs {
			t.Errorf("kubelet_server_expiration_renew_errors = %v, certagent_renewal_errors_total{server} = %v", v, errs)
		}
	})
}

// TestMetricsWithoutServing: with serving off there are no server series,
// as on a kubelet without serving-certificate rotation.
func TestMetricsWithoutServing(t *testing.T) {
	daemonTest(t, func(c *config.Config) { off := false; c.Serving.Enabled = &off }, func(t *testing.T, f *daemonFixture) {
		f.start()
		fams := scrape(t, f.agent)
		for _, name := range []string{"kubelet_certificate_manager_server_ttl_seconds", "kubelet_server_expiration_renew_errors"} {
			if fams[name] != nil {
				t.Errorf("%s exported with serving off", name)
			}
		}
		sample(t, fams, "kubelet_certificate_manager_client_ttl_seconds", "")
	})
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
	var e expo
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
