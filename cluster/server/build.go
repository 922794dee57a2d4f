package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/certagent/certagent/cluster/attestor"
	"github.com/certagent/certagent/cluster/enrollment"
	"github.com/certagent/certagent/cluster/issuer"
	"github.com/certagent/certagent/protocol/attestation"
)

// service is a built, not yet running, attestation service.
type service struct {
	cfg         Config
	log         *zap.Logger
	informers   []cache.SharedIndexInformer
	broadcaster record.EventBroadcaster
	metrics     *metrics
	https       *http.Server
	health      *http.Server
	drain       time.Duration
	state       atomic.Value // string: "ready", or why not
}

// build checks what the service needs from the cluster (its permissions,
// the CRD) and its files, and assembles the parts; it starts nothing.
func build(ctx context.Context, cfg Config) (*service, error) {
	client, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("making the API client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("making the API client: %w", err)
	}
	if err := checkPermissions(ctx, client); err != nil {
		return nil, err
	}
	if err := checkCRD(client); err != nil {
		return nil, err
	}
	cas, err := loadManufacturerCAs(cfg.ManufacturerRoots, cfg.ManufacturerIntermediates)
	if err != nil {
		return nil, err
	}
	cert, err := loadServingCert(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.Logger.Named("tls"))
	if err != nil {
		return nil, err
	}
	s := &service{cfg: cfg, log: cfg.Logger}
	s.state.Store("starting: syncing the TPMEnrollment and CSR caches")
	handler, err := s.buildAttestor(ctx, client, dyn, cas)
	if err != nil {
		return nil, err
	}
	s.buildServers(handler, cert)
	s.log.Info("attestation service configured",
		zap.Bool("manufacturer_ca_policy", cas != nil), zap.Duration("max_expiration", cfg.MaxExpiration), zap.String("version", cfg.Version))
	return s, nil
}

// checkCRD: the TPMEnrollment resource is served, else the informer would
// fail forever with a message about an unknown resource.
func checkCRD(client kubernetes.Interface) error {
	list, err := client.Discovery().ServerResourcesForGroupVersion(attestation.EnrollmentAPIVersion)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("the TPMEnrollment CustomResourceDefinition is not installed (%s is not served): kubectl apply -f packaging/cluster/10-crd.yaml", attestation.EnrollmentAPIVersion)
	}
	if err != nil {
		return fmt.Errorf("checking for the TPMEnrollment CustomResourceDefinition: %w", err)
	}
	if !slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == attestation.EnrollmentResource }) {
		return fmt.Errorf("%s does not serve %s: kubectl apply -f packaging/cluster/10-crd.yaml", attestation.EnrollmentAPIVersion, attestation.EnrollmentResource)
	}
	return nil
}

// buildAttestor makes the informers, the issuer, metrics, the Event
// recorder and the verifier, and returns its handler, timed.
func (s *service) buildAttestor(ctx context.Context, client kubernetes.Interface, dyn dynamic.Interface, cas *attestor.ManufacturerCAs) (http.Handler, error) {
	enrollInf := enrollment.NewInformer(dyn, s.cfg.Resync)
	store, err := enrollment.New(enrollInf)
	if err != nil {
		return nil, err
	}
	csrInf := issuer.NewCSRInformer(client, s.cfg.Resync)
	iss, err := issuer.New(issuer.Config{Client: client, CSRs: csrInf, Timeout: s.cfg.IssueTimeout, MaxExpiration: s.cfg.MaxExpiration, Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.informers = []cache.SharedIndexInformer{enrollInf, csrInf}
	s.metrics = newMetrics(s.cfg.Version, store)
	// Not ended by ctx: Events of the exchanges drained after SIGTERM still
	// go out; shutdown stops it after the drain.
	s.broadcaster = record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	s.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := s.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "certagent-cluster"})
	a, err := attestor.New(attestor.Config{
		Enrollments:     store,
		Issuer:          iss,
		ManufacturerCAs: cas,
		SessionTTL:      s.cfg.SessionTTL,
		Observer:        &observer{metrics: s.metrics, recorder: recorder, refs: store},
		Logger:          s.log,
	})
	if err != nil {
		return nil, err
	}
	return s.metrics.timed(a.Handler()), nil
}

// buildServers makes the HTTPS server for nodes and the plain-HTTP one for
// probes and metrics.
func (s *service) buildServers(attest http.Handler, cert *servingCert) {
	issueTimeout := s.cfg.IssueTimeout
	if issueTimeout == 0 {
		issueTimeout = 20 * time.Second // issuer's default
	}
	s.drain = issueTimeout + 5*time.Second
	s.https = &http.Server{
		Addr:    s.cfg.Listen,
		Handler: attest,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: cert.getCertificate,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      issueTimeout + 15*time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	// Handshake failures (scanners, a node with the wrong CA) at debug.
	if l, err := zap.NewStdLogAt(s.log.Named("https"), zap.DebugLevel); err == nil {
		s.https.ErrorLog = l
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if st := s.state.Load().(string); st != "ready" {
			http.Error(w, st, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	s.health = &http.Server{Addr: s.cfg.HealthListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// listen opens addr now, so a taken port fails the start with its address.
func listen(addr, what string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for %s on %s: %w", what, addr, err)
	}
	return ln, nil
}
