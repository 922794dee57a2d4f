package server

import (
	"context"
	"errors"
	"net/http"

	"go.uber.org/zap"
	"k8s.io/client-go/tools/cache"
)

// run starts the probes, syncs the caches, serves nodes, and drains on
// ctx's end.
func (s *service) run(ctx context.Context) error {
	healthLn, err := listen(s.cfg.HealthListen, "health and metrics")
	if err != nil {
		return err
	}
	httpsLn, err := listen(s.cfg.Listen, "attestation")
	if err != nil {
		_ = healthLn.Close()
		return err
	}
	errs := make(chan error, 2)
	go func() { errs <- serveUntilClosed(s.health.Serve(healthLn)) }()

	informersCtx, stopInformers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopInformers()
	synced := make([]cache.InformerSynced, 0, len(s.informers))
	for _, inf := range s.informers {
		go inf.Run(informersCtx.Done())
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		s.log.Info("stopped before the caches synced")
		s.shutdown(httpsLn)
		return nil
	}
	go func() { errs <- serveUntilClosed(s.https.ServeTLS(httpsLn, "", "")) }()
	s.state.Store("ready")
	s.log.Info("serving attestation", zap.String("listen", httpsLn.Addr().String()), zap.String("health_listen", healthLn.Addr().String()))

	select {
	case <-ctx.Done():
		s.log.Info("stopping: draining attestations in flight", zap.Duration("grace", s.drain))
	case err = <-errs:
		s.log.Error("a listener failed; stopping", zap.Error(err))
	}
	s.shutdown(nil)
	return err
}

// shutdown stops accepting, waits for the calls in flight up to s.drain,
// then stops the probes and the Event broadcaster. unserved, if not nil, is
// the HTTPS listener never served.
func (s *service) shutdown(unserved interface{ Close() error }) {
	s.state.Store("stopping")
	if unserved != nil {
		_ = unserved.Close()
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), s.drain)
	defer cancel()
	if err := s.https.Shutdown(drainCtx); err != nil {
		s.log.Warn("attestations still in flight at the end of the grace period were cut off", zap.Error(err))
	}
	_ = s.health.Shutdown(drainCtx)
	s.broadcaster.Shutdown()
	s.log.Info("stopped")
}

func serveUntilClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
