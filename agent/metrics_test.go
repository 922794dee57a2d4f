package agent

import (
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
		// That they are this process's, read now: TestProcessMetricsAreThisProcesss.

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
