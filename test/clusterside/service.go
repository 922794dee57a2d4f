package clusterside

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
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
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certagent/certagent/test/controlplane"
)

// ServiceAccountKubeconfig writes a kubeconfig that authenticates as the
// service account sa of the namespace with a TokenRequest token, as the
// pod's projected token would: the service then has exactly that account's
// RBAC.
func (c *Cluster) ServiceAccountKubeconfig(ctx context.Context, sa string) (string, error) {
	path := filepath.Join(c.Dir, "kubeconfig-"+sa)
	return path, c.CP.ServiceAccountKubeconfig(ctx, Namespace, sa, path)
}

// mountTLSSecret writes the Secret init-tls made into TLSDir, as the kubelet
// mounts it into the pod.
func (c *Cluster) mountTLSSecret(ctx context.Context) error {
	s, err := c.CP.Admin.CoreV1().Secrets(Namespace).Get(ctx, "certagent-cluster-tls", metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading the Secret init-tls made: %w", err)
	}
	if err := os.MkdirAll(c.TLSDir, 0o700); err != nil {
		return err
	}
	for _, k := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(c.TLSDir, k), s.Data[k], 0o600); err != nil {
			return err
		}
	}
	return nil
}

// running are the services started and not stopped, by name.
var running sync.Map

// Running are the services started and not exited.
func Running() []*Service {
	var out []*Service
	running.Range(func(_, v any) bool {
		if s := v.(*Service); !s.Exited() {
			out = append(out, s)
		}
		return true
	})
	return out
}

// Service is one certagent-cluster serve process.
type Service struct {
	Name, URL, Health, LogPath string
	bin                        string
	args                       []string
	cmd                        *exec.Cmd
	done                       chan struct{}
}

// StartService runs `certagent-cluster serve` as the Deployment's container
// does (JSON logs, the mounted TLS Secret), with the manufacturer-CA policy on
// for the vendor CA and a 2 h cap on lifetimes, and waits for /readyz.
func (c *Cluster) StartService(ctx context.Context, name, kubeconfig, listen, healthListen string, extra ...string) (*Service, error) {
	roots, inters := filepath.Join(c.Dir, "vendor-roots.pem"), filepath.Join(c.Dir, "vendor-intermediates.pem")
	if err := os.WriteFile(roots, pemCert(c.Vendor.Root), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(inters, pemCert(c.Vendor.Intermediate), 0o644); err != nil {
		return nil, err
	}
	s := &Service{
		Name: name, URL: "https://" + listen, Health: "http://" + healthListen,
		LogPath: filepath.Join(c.Dir, "service-"+name+".log"), bin: c.Bin,
		args: append([]string{"serve", "--kubeconfig", kubeconfig, "--listen", listen, "--health-listen", healthListen,
			"--tls-cert-file", filepath.Join(c.TLSDir, "tls.crt"), "--tls-private-key-file", filepath.Join(c.TLSDir, "tls.key"),
			"--manufacturer-roots", roots, "--manufacturer-intermediates", inters,
			"--max-expiration", "2h", "--log-level", "debug"}, extra...),
	}
	if err := s.start(); err != nil {
		return nil, err
	}
	if err := s.WaitReady(ctx, time.Minute); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func (s *Service) start() error {
	logFile, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := controlplane.Spawn(s.cmd); err != nil {
		return fmt.Errorf("starting certagent-cluster: %w", err)
	}
	s.done = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	running.Store(s.Name, s)
	return nil
}

// PID is the process's id.
func (s *Service) PID() int { return s.cmd.Process.Pid }

// Exited says whether the process has exited.
func (s *Service) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// WaitReady polls /readyz until it answers 200.
func (s *Service) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s.Exited() {
			return fmt.Errorf("certagent-cluster %s exited: %v\n%s", s.Name, s.cmd.ProcessState, s.LogText())
		}
		if rsp, err := http.Get(s.Health + "/readyz"); err == nil {
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
	return fmt.Errorf("certagent-cluster %s not ready after %v:\n%s", s.Name, timeout, s.LogText())
}

// Stop sends SIGTERM and returns the exit code (-1 if it had to be killed).
func (s *Service) Stop() int {
	if s == nil || s.cmd == nil {
		return -1
	}
	if s.Exited() {
		return s.cmd.ProcessState.ExitCode()
	}
	return terminate(s.cmd, s.done, 40*time.Second)
}

// Crash kills the process with SIGKILL.
func (s *Service) Crash() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart runs the same command again (same ports and files) and waits for
// it to be ready.
func (s *Service) Restart(ctx context.Context) error {
	if err := s.start(); err != nil {
		return err
	}
	return s.WaitReady(ctx, time.Minute)
}

// LogText is the service's log so far.
func (s *Service) LogText() string {
	data, _ := os.ReadFile(s.LogPath)
	return string(data)
}

// LogLines are the service's JSON log lines.
func (s *Service) LogLines() []map[string]any {
	f, err := os.Open(s.LogPath)
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

// Metric reads one sample from /metrics: series is the name with its labels
// as Prometheus prints them, e.g. `x_total{reason="",result="issued"}`; 0
// if absent.
func (s *Service) Metric(series string) (float64, error) {
	rsp, err := http.Get(s.Health + "/metrics")
	if err != nil {
		return 0, err
	}
	defer rsp.Body.Close()
	body, _ := io.ReadAll(rsp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("metric %s: %w", series, err)
			}
			return f, nil
		}
	}
	return 0, nil
}
