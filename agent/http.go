package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent/observe"
)

// handler serves /metrics, /healthz (the loop is alive) and /readyz (the
// client certificate is valid now).
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		var e observe.Expo
		observe.WriteMetrics(&e, a.certs, a.Config().ServingEnabled(), Version, a.clock.Now())
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write(e.Bytes())
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
