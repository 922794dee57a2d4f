// Package server is the attestation service as it runs in the cluster
// (certagent-cluster serve): it wires the verifier (cluster/attestor) to
// Kubernetes — enrolments from TPMEnrollment resources (cluster/enrollment),
// certificates through approved CSRs (cluster/issuer) — and serves it over
// HTTPS with the certificate init-tls made, with health, readiness and
// Prometheus metrics on a separate plain-HTTP port, an Event on the
// TPMEnrollment for each issued or refused attestation, and a log line for
// every refusal.
//
// It owns start-up order (permissions and the CRD checked first, caches
// synced before ready) and shutdown (SIGTERM drains in-flight exchanges).
// It holds no secret of its own beyond the serving key, and needs no RBAC on
// Secrets.
package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/rest"
)

// Config configures Run; check validates it.
type Config struct {
	// REST is the connection to the API server (in-cluster, or a
	// kubeconfig's). Required.
	REST *rest.Config
	// Listen is the HTTPS address nodes attest to (":8443").
	Listen string
	// HealthListen is the plain-HTTP address of /healthz, /readyz and
	// /metrics (":8080"); never the attestation endpoints.
	HealthListen string
	// TLSCertFile and TLSKeyFile are the serving certificate (with its CA
	// after it, so nodes may pin the CA by hash) and key: the mounted Secret
	// init-tls made. Reloaded when they change.
	TLSCertFile, TLSKeyFile string
	// ManufacturerRoots, if set, turns on the policy that EK certificates
	// chain to one of these PEM roots; ManufacturerIntermediates are their
	// issuing CAs (optional).
	ManufacturerRoots, ManufacturerIntermediates string
	// SessionTTL is the time from begin to finish (attestor's default if zero).
	SessionTTL time.Duration
	// IssueTimeout bounds issuing one certificate (issuer's default if zero).
	IssueTimeout time.Duration
	// MaxExpiration caps client certificate lifetimes (none if zero).
	MaxExpiration time.Duration
	// Resync is the informers' resync period (10 minutes if zero).
	Resync time.Duration
	// Version is reported in the build_info metric and the logs.
	Version string
	// Logger is the root logger; zap.NewNop() if nil.
	Logger *zap.Logger
}

func (c *Config) check() error {
	if c.REST == nil {
		return errors.New("no API server connection (REST)")
	}
	if c.Listen == "" || c.HealthListen == "" {
		return errors.New("--listen and --health-listen must both be set")
	}
	if c.TLSCertFile == "" || c.TLSKeyFile == "" {
		return errors.New("--tls-cert-file and --tls-private-key-file must both be set (the Secret init-tls made)")
	}
	if c.Resync == 0 {
		c.Resync = 10 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	return nil
}

// Run runs the service until ctx ends, then drains: readiness goes false,
// the HTTPS server stops accepting and waits for the calls in flight (a
// finish may be waiting for its certificate) up to the issue timeout and a
// little more, and the caches stop. It returns an error only for a start-up
// failure (configuration, permissions, the CRD, the listeners).
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.check(); err != nil {
		return fmt.Errorf("configuring the attestation service: %w", err)
	}
	s, err := build(ctx, cfg)
	if err != nil {
		return err
	}
	return s.run(ctx)
}
