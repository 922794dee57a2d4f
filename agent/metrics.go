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

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
)

// The metrics (docs/metrics.md), in Prometheus' text format 0.0.4. Written
// here rather than with client_golang: measured on this agent, client_golang
// and the protobuf it brings cost 2.4 MB of binary and 3-6 MiB of resident
// memory on every node (docs/metrics.md, "Why not client_golang").
// TestMetricsKubeletCompatible parses the output with Prometheus' parser.

// certSeries is one certagent_* series per certificate.
type certSeries struct {
	name, help, typ string
	value           func(s *certState, now time.Time) float64
}

func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

var certSeriesList = []certSeries{
	{"certagent_certificate_expiry_seconds", "Seconds until the stored certificate expires (negative once expired, 0 if none).", "gauge",
		func(s *certState, now time.Time) float64 {
			if s.notAfter.IsZero() {
				return 0
			}
			return s.notAfter.Sub(now).Seconds()
		}},
	{"certagent_certificate_not_after_timestamp_seconds", "NotAfter of the stored certificate, Unix time (0 if none).", "gauge",
		func(s *certState, _ time.Time) float64 { return unixSeconds(s.notAfter) }},
	{"certagent_certificate_renewal_deadline_timestamp_seconds", "When the stored certificate is renewed, Unix time (0 if none).", "gauge",
		func(s *certState, _ time.Time) float64 { return unixSeconds(s.deadline) }},
	{"certagent_renewal_attempts_total", "Certificate requests made (bootstrap or renewal).", "counter",
		func(s *certState, _ time.Time) float64 { return float64(s.attempts) }},
	{"certagent_renewal_errors_total", "Failed attempts to obtain a certificate.", "counter",
		func(s *certState, _ time.Time) float64 { return float64(s.errors) }},
	{"certagent_csr_denied_total", "Certificate signing requests of this agent that were denied.", "counter",
		func(s *certState, _ time.Time) float64 { return float64(s.denied) }},
	{"certagent_last_success_timestamp_seconds", "When a certificate was last stored, Unix time (0 if never in this process).", "gauge",
		func(s *certState, _ time.Time) float64 { return unixSeconds(s.lastSuccess) }},
	{"certagent_pending_csr", "1 while a CSR is waiting for approval or issuance.", "gauge",
		func(s *certState, _ time.Time) float64 { return boolFloat(s.waitingCSR != "") }},
	{"certagent_hook_errors_total", "Post-renew hooks that failed or timed out.", "counter",
		func(s *certState, _ time.Time) float64 { return float64(s.hookErrors) }},
}

// The kubelet's certificate-manager series, with its names, help, types and
// meaning (k8s.io/kubernetes cmd/kubelet/app and pkg/kubelet/certificate), so
// that the alerts clusters already run on them (kubernetes-mixin) keep
// working when the kubelet's own rotation is off.
var (
	kubeletTTL = map[bootstrap.Kind][2]string{
		bootstrap.Client: {"kubelet_certificate_manager_client_ttl_seconds",
			"Gauge of the TTL (time-to-live) of the Kubelet's client certificate. The value is in seconds until certificate expiry (negative if already expired). If client certificate is invalid or unused, the value will be +INF."},
		bootstrap.Serving: {"kubelet_certificate_manager_server_ttl_seconds",
			"Gauge of the shortest TTL (time-to-live) of the Kubelet's serving certificate. The value is in seconds until certificate expiry (negative if already expired). If serving certificate is invalid or unused, the value will be +INF."},
	}
	kubeletRenewErrors = map[bootstrap.Kind][2]string{
		bootstrap.Client:  {"kubelet_certificate_manager_client_expiration_renew_errors", "Counter of certificate renewal errors."},
		bootstrap.Serving: {"kubelet_server_expiration_renew_errors", "Counter of certificate renewal errors."},
	}
)

// writeMetrics renders every series into w. The state is copied under the
// lock and rendered without it: a slow scraper must not hold up the workers.
func (a *Agent) writeMetrics(w *expo) {
	a.mu.Lock()
	now := a.clock.Now()
	kinds := []bootstrap.Kind{bootstrap.Client}
	if a.cfg.ServingEnabled() {
		kinds = append(kinds, bootstrap.Serving)
	}
	states := make([]certState, len(kinds))
	for i, k := range kinds {
		states[i] = *a.state(k)
	}
	ready := a.clientValidLocked(now) && a.identity.Accepted
	a.mu.Unlock()

	for _, m := range certSeriesList {
		w.family(m.name, m.help, m.typ)
		for i, k := range kinds {
			w.sample(m.name, m.value(&states[i], now), "certificate", string(k))
		}
	}
	w.family("certagent_ready", "1 while the API server accepts kubelet.conf and its client certificate is valid.", "gauge")
	w.sample("certagent_ready", boolFloat(ready))
	w.family("certagent_build_info", "Always 1; the labels say which certagent runs.", "gauge")
	w.sample("certagent_build_info", 1, "version", Version, "goversion", runtime.Version())
	for i, k := range kinds {
		ttl, errs := kubeletTTL[k], kubeletRenewErrors[k]
		w.family(ttl[0], ttl[1], "gauge")
		w.sample(ttl[0], kubeletTTLSeconds(states[i].notAfter, now))
		w.family(errs[0], errs[1], "counter")
		w.sample(errs[0], float64(states[i].errors))
	}
	writeProcessMetrics(w)
}

// kubeletTTLSeconds is the kubelet's TTL gauge: whole seconds until
// notAfter (negative once expired), +Inf without a certificate.
func kubeletTTLSeconds(notAfter, now time.Time) float64 {
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
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var e expo
		a.writeMetrics(&e)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(e.buf.Bytes())
	})
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
