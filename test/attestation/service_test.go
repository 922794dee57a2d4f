package attestation

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/certagent/certagent/test/clusterside"
)

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account sa of the namespace (clusterside.Cluster.ServiceAccountKubeconfig).
func serviceAccountKubeconfig(ctx context.Context, sa string) (string, error) {
	return cluster.ServiceAccountKubeconfig(ctx, sa)
}

// service is one certagent-cluster serve process (clusterside.Service),
// with the suite's test helpers.
type service struct{ *clusterside.Service }

// startService runs `certagent-cluster serve` as the Deployment's container
// does (clusterside.Cluster.StartService) and waits for /readyz.
func startService(ctx context.Context, name, kubeconfig, listen, healthListen string, extra ...string) (*service, error) {
	s, err := cluster.StartService(ctx, name, kubeconfig, listen, healthListen, extra...)
	if err != nil {
		return nil, err
	}
	return &service{s}, nil
}

// runningServices are the services started and not exited.
func runningServices() []*service {
	var out []*service
	for _, s := range clusterside.Running() {
		out = append(out, &service{s})
	}
	return out
}

// stop sends SIGTERM and returns the exit code (-1 if it had to be killed).
func (s *service) stop() int {
	if s == nil {
		return -1
	}
	return s.Stop()
}

// crash kills the process with SIGKILL.
func (s *service) crash() { s.Crash() }

// restart runs the same command again (same ports and files) and waits for
// it to be ready.
func (s *service) restart(t *testing.T) {
	t.Helper()
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (s *service) logText() string { return s.LogText() }

// logLines are the service's JSON log lines.
func (s *service) logLines() []map[string]any { return s.LogLines() }

// metric reads one sample from /metrics (0 if absent); an error fails t.
func (s *service) metric(t *testing.T, series string) float64 {
	t.Helper()
	v, err := s.Metric(series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// attempts is certagent_attestation_attempts_total for result and reason.
func (s *service) attempts(t *testing.T, result, reason string) float64 {
	return s.metric(t, fmt.Sprintf(`certagent_attestation_attempts_total{reason=%q,result=%q}`, reason, result))
}

// client is an HTTPS client trusting the service by init-tls's CA only.
func (s *service) client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serviceCAPool()}}, Timeout: 40 * time.Second}
}
