package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
)

// The metrics, in Prometheus' text format (docs/metrics.md). Written by hand:
// a dozen series do not justify a client library in every node's agent.
func (a *Agent) writeMetrics(w io.Writer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.clock.Now()
	kinds := []bootstrap.Kind{bootstrap.Client}
	if a.cfg.ServingEnabled() {
		kinds = append(kinds, bootstrap.Serving)
	}
	type series struct {
		name, help, typ string
		value           func(*certState) float64
	}
	ts := func(t time.Time) float64 {
		if t.IsZero() {
			return 0
		}
		return float64(t.UnixNano()) / 1e9
	}
	all := []series{
		{"certagent_certificate_expiry_seconds", "Seconds until the stored certificate expires (negative once expired, 0 if none).", "gauge",
			func(s *certState) float64 {
				if s.notAfter.IsZero() {
					return 0
				}
				return s.notAfter.Sub(now).Seconds()
			}},
		{"certagent_certificate_not_after_timestamp_seconds", "NotAfter of the stored certificate, Unix time (0 if none).", "gauge", func(s *certState) float64 { return ts(s.notAfter) }},
		{"certagent_certificate_renewal_deadline_timestamp_seconds", "When the stored certificate is renewed, Unix time (0 if none).", "gauge", func(s *certState) float64 { return ts(s.deadline) }},
		{"certagent_renewal_attempts_total", "Certificate requests made (bootstrap or renewal).", "counter", func(s *certState) float64 { return float64(s.attempts) }},
		{"certagent_renewal_errors_total", "Failed attempts to obtain a certificate.", "counter", func(s *certState) float64 { return float64(s.errors) }},
		{"certagent_last_success_timestamp_seconds", "When a certificate was last stored, Unix time (0 if never in this process).", "gauge", func(s *certState) float64 { return ts(s.lastSuccess) }},
		{"certagent_pending_csr", "1 while a CSR is waiting for approval or issuance.", "gauge", func(s *certState) float64 {
			if s.waitingCSR != "" {
				return 1
			}
			return 0
		}},
		{"certagent_hook_errors_total", "Post-renew hooks that failed or timed out.", "counter", func(s *certState) float64 { return float64(s.hookErrors) }},
	}
	for _, m := range all {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for _, k := range kinds {
			fmt.Fprintf(w, "%s{certificate=%q} %g\n", m.name, string(k), m.value(a.state(k)))
		}
	}
	ready := 0
	if a.clientValidLocked(now) && a.identity.Accepted {
		ready = 1
	}
	fmt.Fprintf(w, "# HELP certagent_ready 1 while the API server accepts kubelet.conf and its client certificate is valid.\n# TYPE certagent_ready gauge\ncertagent_ready %d\n", ready)
	fmt.Fprintf(w, "# HELP go_goroutines Number of goroutines that currently exist.\n# TYPE go_goroutines gauge\ngo_goroutines %d\n", runtime.NumGoroutine())
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		fmt.Fprintf(w, "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds %d\n", len(fds))
	}
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
		// Rendered under the lock into memory, written without it: a slow
		// scraper must not hold up the workers.
		var buf bytes.Buffer
		a.writeMetrics(&buf)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(buf.Bytes())
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
