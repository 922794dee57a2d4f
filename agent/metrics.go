package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
)

// metricsRegistry holds the agent's series (docs/metrics.md) and the
// standard go_* and process_* collectors of client_golang.
func (a *Agent) metricsRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&agentCollector{a: a},
	)
	return reg
}

// certSeries is one certagent_* series per certificate.
type certSeries struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(s *certState, now time.Time) float64
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func newCertDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, []string{"certificate"}, nil)
}

var (
	certSeriesList = []certSeries{
		{newCertDesc("certagent_certificate_expiry_seconds", "Seconds until the stored certificate expires (negative once expired, 0 if none)."), prometheus.GaugeValue,
			func(s *certState, now time.Time) float64 {
				if s.notAfter.IsZero() {
					return 0
				}
				return s.notAfter.Sub(now).Seconds()
			}},
		{newCertDesc("certagent_certificate_not_after_timestamp_seconds", "NotAfter of the stored certificate, Unix time (0 if none)."), prometheus.GaugeValue,
			func(s *certState, _ time.Time) float64 { return unixSeconds(s.notAfter) }},
		{newCertDesc("certagent_certificate_renewal_deadline_timestamp_seconds", "When the stored certificate is renewed, Unix time (0 if none)."), prometheus.GaugeValue,
			func(s *certState, _ time.Time) float64 { return unixSeconds(s.deadline) }},
		{newCertDesc("certagent_renewal_attempts_total", "Certificate requests made (bootstrap or renewal)."), prometheus.CounterValue,
			func(s *certState, _ time.Time) float64 { return float64(s.attempts) }},
		{newCertDesc("certagent_renewal_errors_total", "Failed attempts to obtain a certificate."), prometheus.CounterValue,
			func(s *certState, _ time.Time) float64 { return float64(s.errors) }},
		{newCertDesc("certagent_csr_denied_total", "Certificate signing requests of this agent that were denied."), prometheus.CounterValue,
			func(s *certState, _ time.Time) float64 { return float64(s.denied) }},
		{newCertDesc("certagent_last_success_timestamp_seconds", "When a certificate was last stored, Unix time (0 if never in this process)."), prometheus.GaugeValue,
			func(s *certState, _ time.Time) float64 { return unixSeconds(s.lastSuccess) }},
		{newCertDesc("certagent_pending_csr", "1 while a CSR is waiting for approval or issuance."), prometheus.GaugeValue,
			func(s *certState, _ time.Time) float64 {
				if s.waitingCSR != "" {
					return 1
				}
				return 0
			}},
		{newCertDesc("certagent_hook_errors_total", "Post-renew hooks that failed or timed out."), prometheus.CounterValue,
			func(s *certState, _ time.Time) float64 { return float64(s.hookErrors) }},
	}
	readyDesc     = prometheus.NewDesc("certagent_ready", "1 while the API server accepts kubelet.conf and its client certificate is valid.", nil, nil)
	buildInfoDesc = prometheus.NewDesc("certagent_build_info", "Always 1; the labels say which certagent runs.", []string{"version", "goversion"}, nil)

	// The kubelet's certificate-manager series, with its names, help, types
	// and meaning (k8s.io/kubernetes pkg/kubelet/certificate and
	// cmd/kubelet/app), so that the alerts clusters already run on them
	// (kubernetes-mixin) keep working when the kubelet's own rotation is off.
	kubeletTTLDesc = map[bootstrap.Kind]*prometheus.Desc{
		bootstrap.Client: prometheus.NewDesc("kubelet_certificate_manager_client_ttl_seconds",
			"Gauge of the TTL (time-to-live) of the Kubelet's client certificate. The value is in seconds until certificate expiry (negative if already expired). If client certificate is invalid or unused, the value will be +INF.", nil, nil),
		bootstrap.Serving: prometheus.NewDesc("kubelet_certificate_manager_server_ttl_seconds",
			"Gauge of the shortest TTL (time-to-live) of the Kubelet's serving certificate. The value is in seconds until certificate expiry (negative if already expired). If serving certificate is invalid or unused, the value will be +INF.", nil, nil),
	}
	kubeletRenewErrorsDesc = map[bootstrap.Kind]*prometheus.Desc{
		bootstrap.Client:  prometheus.NewDesc("kubelet_certificate_manager_client_expiration_renew_errors", "Counter of certificate renewal errors.", nil, nil),
		bootstrap.Serving: prometheus.NewDesc("kubelet_server_expiration_renew_errors", "Counter of certificate renewal errors.", nil, nil),
	}
)

// agentCollector renders the agent's state at scrape time.
type agentCollector struct{ a *Agent }

func (c *agentCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range certSeriesList {
		ch <- m.desc
	}
	ch <- readyDesc
	ch <- buildInfoDesc
	for _, k := range []bootstrap.Kind{bootstrap.Client, bootstrap.Serving} {
		ch <- kubeletTTLDesc[k]
		ch <- kubeletRenewErrorsDesc[k]
	}
}

// Collect copies the state under the lock and renders it without: a slow
// scraper must not hold up the workers.
func (c *agentCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	now := a.clock.Now()
	kinds := []bootstrap.Kind{bootstrap.Client}
	if a.cfg.ServingEnabled() {
		kinds = append(kinds, bootstrap.Serving)
	}
	states := make(map[bootstrap.Kind]certState, len(kinds))
	for _, k := range kinds {
		states[k] = *a.state(k)
	}
	ready := a.clientValidLocked(now) && a.identity.Accepted
	a.mu.Unlock()

	for _, m := range certSeriesList {
		for _, k := range kinds {
			s := states[k]
			ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(&s, now), string(k))
		}
	}
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, boolFloat(ready))
	ch <- prometheus.MustNewConstMetric(buildInfoDesc, prometheus.GaugeValue, 1, Version, runtime.Version())
	for _, k := range kinds {
		s := states[k]
		ch <- prometheus.MustNewConstMetric(kubeletTTLDesc[k], prometheus.GaugeValue, kubeletTTL(s.notAfter, now))
		ch <- prometheus.MustNewConstMetric(kubeletRenewErrorsDesc[k], prometheus.CounterValue, float64(s.errors))
	}
}

// kubeletTTL is the kubelet's TTL gauge: whole seconds until notAfter
// (negative once expired), +Inf without a certificate.
func kubeletTTL(notAfter, now time.Time) float64 {
	if notAfter.IsZero() {
		return math.Inf(1)
	}
	return math.Trunc(notAfter.Sub(now).Seconds())
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (a *Agent) clientValidLocked(now time.Time) bool {
	s := a.state(bootstrap.Client)
	return !s.notAfter.IsZero() && now.Before(s.notAfter)
}

// handler serves /metrics, /healthz (the loop is alive) and /readyz (the
// client certificate is valid now).
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metricsRegistry(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if kind, busy := a.hungWorker(); kind != "" {
			http.Error(w, fmt.Sprintf("the %s worker has been busy for %s: it is stuck", kind, busy.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		// The files are the truth: kubelet.conf as it is on disk now must be
		// the one the API server accepted.
		if _, err := a.bootstrapper().AcceptedNode(); err != nil {
			http.Error(w, fmt.Sprintf("kubelet.conf is not accepted by the API server: %v\n%s", err, a.statusLine()), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// serveHTTP listens on addr until ctx ends; the bound address is logged (addr
// may use port 0).
func (a *Agent) serveHTTP(ctx context.Context, addr string) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for metrics on %s: %w (set metrics.address, or \"\" to turn it off)", addr, err)
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	a.log.Info("serving /metrics, /healthz and /readyz", zap.String("address", l.Addr().String()))
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Warn("metrics listener", zap.Error(err))
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
