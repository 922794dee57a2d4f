package approver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/certagent/certagent/cluster/enrollment"
	"github.com/certagent/certagent/cluster/rbac"
	"github.com/certagent/certagent/protocol/attestation"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// RunConfig configures Run: the controller as certagent-cluster approve runs it.
type RunConfig struct {
	// REST is the connection to the API server. Required.
	REST *rest.Config
	// Policy and Deny are Config's.
	Policy Policy
	Deny   bool
	// HealthListen is the plain-HTTP address of /healthz, /readyz (ready
	// once the caches synced) and /metrics; none if empty.
	HealthListen string
	// Workers decide CSRs in parallel (8 if zero): each decision waits on
	// one write, so a scale-up's burst of CSRs is not served one round trip
	// after another.
	Workers int
	// Resync is the informers' resync period (10 minutes if zero).
	Resync time.Duration
	// Logger is the root logger; zap.NewNop() if nil.
	Logger *zap.Logger
}

// Run runs the approver until ctx ends. It returns an error for a start-up
// failure (configuration, missing RBAC, the health listener, caches that
// never sync).
func Run(ctx context.Context, cfg RunConfig) error {
	if cfg.REST == nil {
		return errors.New("approver: no API server connection (REST)")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.Resync == 0 {
		cfg.Resync = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	client, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return fmt.Errorf("making the API client: %w", err)
	}
	if err := rbac.Check(ctx, client, permissions, Manifest); err != nil {
		return fmt.Errorf("approver: %w", err)
	}
	// Events through a client of their own, with its own rate limit: a burst
	// of them (one per decision in a scale-up) must not queue the approvals.
	eventClient, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return fmt.Errorf("making the API client for Events: %w", err)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventClient.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	enrollments, err := enrollmentInformer(cfg, client)
	if err != nil {
		return err
	}
	metrics := NewMetrics()
	c, err := New(Config{
		Client: client, CSRs: NewCSRInformer(client, cfg.Resync), Nodes: NewNodeInformer(client, cfg.Resync),
		Enrollments: enrollments, Metrics: metrics,
		Policy: cfg.Policy, Deny: cfg.Deny, Logger: cfg.Logger,
		Recorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "certagent-cluster-approver"}),
	})
	if err != nil {
		return err
	}
	var ready atomic.Bool
	if cfg.HealthListen != "" {
		stop, err := serveHealth(cfg.HealthListen, &ready, metrics.Handler(), cfg.Logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return c.Run(ctx, cfg.Workers, func() { ready.Store(true) })
}

// enrollmentInformer is the TPMEnrollment informer, or nil if the API
// server does not serve TPMEnrollments (the CRD is not installed: no node
// joined by attestation). Installing it later needs a restart to be seen.
func enrollmentInformer(cfg RunConfig, client kubernetes.Interface) (cache.SharedIndexInformer, error) {
	_, err := client.Discovery().ServerResourcesForGroupVersion(attestation.EnrollmentAPIVersion)
	if apierrors.IsNotFound(err) {
		cfg.Logger.Info("the API server serves no TPMEnrollments: no CSR is checked against an enrolment (restart after installing packaging/cluster/10-crd.yaml)")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("asking the API server whether it serves %s: %w", attestation.EnrollmentAPIVersion, err)
	}
	dyn, err := dynamic.NewForConfig(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("making the dynamic API client: %w", err)
	}
	return enrollment.NewInformer(dyn, cfg.Resync), nil
}

// serveHealth serves /healthz (alive), /readyz (the caches synced) and
// /metrics.
func serveHealth(addr string, ready *atomic.Bool, metrics http.Handler, log *zap.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for health checks on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "starting: syncing the CSR and Node caches", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("the health listener failed", zap.Error(err))
		}
	}()
	return func() { _ = srv.Close() }, nil
}
