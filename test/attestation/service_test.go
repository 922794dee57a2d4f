package attestation

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// serviceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account sa of the namespace, with exactly that account's RBAC.
func serviceAccountKubeconfig(ctx context.Context, sa string) (string, error) {
	path := filepath.Join(work, "kubeconfig-"+sa)
	return path, cp.ServiceAccountKubeconfig(ctx, namespace, sa, path)
}

// mountTLSSecret writes the Secret init-tls made into dir, as the kubelet
// mounts it into the pod.
func mountTLSSecret(ctx context.Context, dir string) error {
	s, err := cp.Admin.CoreV1().Secrets(namespace).Get(ctx, "certagent-cluster-tls", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the Secret init-tls made: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, k := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, k), s.Data[k], 0o600); err != nil {
			return err
		}
	}
	return nil
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

// service is one certagent-cluster serve process.
type service struct {
	name, url, health, logPath string
	args                       []string
	cmd                        *exec.Cmd
	done                       chan struct{}
}

// startService runs `certagent-cluster serve` as the Deployment's container
// does (JSON logs, the mounted TLS Secret), with the manufacturer-CA policy on
// for the vendor CA and a 2 h cap on lifetimes, and waits for /readyz.
func startService(ctx context.Context, name, kubeconfig, listen, healthListen string, extra ...string) (*service, error) {
	roots, inters := filepath.Join(work, "vendor-roots.pem"), filepath.Join(work, "vendor-intermediates.pem")
	if err := os.WriteFile(roots, pemCert(vendor.Root), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(inters, pemCert(vendor.Intermediate), 0o644); err != nil {
		return nil, err
	}
	s := &service{
		name: name, url: "https://" + listen, health: "http://" + healthListen,
		logPath: filepath.Join(work, "service-"+name+".log"),
		args: append([]string{"serve", "--kubeconfig", kubeconfig, "--listen", listen, "--health-listen", healthListen,
			"--tls-cert-file", filepath.Join(tlsDir, "tls.crt"), "--tls-private-key-file", filepath.Join(tlsDir, "tls.key"),
			"--manufacturer-roots", roots, "--manufacturer-intermediates", inters,
			"--max-expiration", "2h", "--log-level", "debug"}, extra...),
	}
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
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	s.cmd = exec.Command(clusterBin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(s.cmd); err != nil {
		return fmt.Errorf("starting certagent-cluster: %w", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	running.Store(s.name, s)
	return nil
}

func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// waitReady polls /readyz until it answers 200.
func (s *service) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s.exited() {
			return fmt.Errorf("certagent-cluster %s exited: %v\n%s", s.name, s.cmd.ProcessState, s.logText())
		}
		if rsp, err := http.Get(s.health + "/readyz"); err == nil {
			rsp.Body.Close()
			if rsp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("certagent-cluster %s not ready after %v:\n%s", s.name, timeout, s.logText())
}

// stop sends SIGTERM and returns the exit code (-1 if it had to be killed).
func (s *service) stop() int {
	if s == nil || s.cmd == nil {
		return -1
	}
	if !s.exited() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(40 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
			return -1
		}
	}
	return s.cmd.ProcessState.ExitCode()
}

// crash kills the process with SIGKILL.
func (s *service) crash() {
	_ = s.cmd.Process.Kill()
	<-s.done
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

func (s *service) logText() string {
	data, _ := os.ReadFile(s.logPath)
	return string(data)
}

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
	rsp, err := http.Get(s.health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	body, _ := io.ReadAll(rsp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return 0
}

// attempts is certagent_attestation_attempts_total for result and reason.
func (s *service) attempts(t *testing.T, result, reason string) float64 {
	return s.metric(t, fmt.Sprintf(`certagent_attestation_attempts_total{reason=%q,result=%q}`, reason, result))
}

// client is an HTTPS client trusting the service by init-tls's CA only.
func (s *service) client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serviceCAPool()}}, Timeout: 40 * time.Second}
}
