package attestation

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/certagent/certagent/test/attestsvc"
)

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account sa of the namespace (package attestsvc).
func serviceAccountKubeconfig(ctx context.Context, sa string) (string, error) {
	return attestsvc.ServiceAccountKubeconfig(ctx, cp, work, sa)
}

// mountTLSSecret writes the Secret init-tls made into dir.
func mountTLSSecret(ctx context.Context, dir string) error {
	return attestsvc.MountTLSSecret(ctx, cp, dir)
}

// running are the services started and not stopped, by name.
var running sync.Map

func runningServices() []*service {
	var out []*service
	running.Range(func(_, v any) bool {
		if s := v.(*service); !s.exited() {
			out = append(out, s)
		}
		return true
	})
	return out
}

// service is one certagent-cluster serve process (attestsvc.Process) with
// the tests' name for it.
type service struct {
	*attestsvc.Process
	name, url, health, logPath string
}

// startService runs `certagent-cluster serve` as the Deployment's container
// does (attestsvc.ServeArgs: JSON logs, the mounted TLS Secret, the
// manufacturer-CA policy on for the vendor CA, a 2 h cap on lifetimes), and
// waits for /readyz.
func startService(ctx context.Context, name, kubeconfig, listen, healthListen string, extra ...string) (*service, error) {
	roots, inters, err := attestsvc.WriteVendorPEM(work, vendor.Root, vendor.Intermediate)
	if err != nil {
		return nil, err
	}
	s := &service{name: name, url: "https://" + listen, health: "http://" + healthListen,
		logPath: filepath.Join(work, "service-"+name+".log")}
	s.Process = &attestsvc.Process{Bin: clusterBin, LogPath: s.logPath, Health: s.health,
		Args: attestsvc.ServeArgs(kubeconfig, listen, healthListen, tlsDir, roots, inters, "debug", extra...)}
	if err := s.start(); err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx, time.Minute); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *service) start() error {
	if err := s.Start(); err != nil {
		return err
	}
	running.Store(s.name, s)
	return nil
}

func (s *service) exited() bool { return s.Exited() }

func (s *service) waitReady(ctx context.Context, timeout time.Duration) error {
	if err := s.WaitReady(ctx, timeout); err != nil {
		return fmt.Errorf("service %s: %w", s.name, err)
	}
	return nil
}

// stop sends SIGTERM and returns the exit code (-1 if it had to be killed).
func (s *service) stop() int {
	if s == nil {
		return -1
	}
	return s.Stop()
}

// crash kills the process with SIGKILL.
func (s *service) crash() {
	_ = s.Cmd.Process.Kill()
	<-s.Done
}

// restart runs the same command again (same ports and files) and waits for
// it to be ready.
func (s *service) restart(t *testing.T) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	if err := s.waitReady(context.Background(), time.Minute); err != nil {
		t.Fatal(err)
	}
}

func (s *service) logText() string { return s.LogText() }

// logLines are the service's JSON log lines.
func (s *service) logLines() []map[string]any {
	f, err := os.Open(s.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines
}

// metric reads one sample from /metrics: series is the name with its labels
// as Prometheus prints them, e.g. `x_total{reason="",result="issued"}`; 0
// if absent.
func (s *service) metric(t *testing.T, series string) float64 {
	t.Helper()
	v, err := s.Metric(series)
	if err != nil {
		t.Fatalf("metric %s: %v", series, err)
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
