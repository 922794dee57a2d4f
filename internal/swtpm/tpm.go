package swtpm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrMissing says swtpm (or one of its tools) is not installed.
var ErrMissing = errors.New("not installed: run `make tpm-deps` (apt-get install swtpm swtpm-tools)")

func lookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("swtpm tool %s %w", name, ErrMissing)
	}
	return p, nil
}

// TPM is one manufactured software TPM: its state directory and, while
// running, the swtpm process serving raw TPM 2.0 commands on Addr.
type TPM struct {
	// Dir holds the TPM's state (its seeds, NV with the EK certificates).
	Dir string
	// Addr is host:port of the command channel while running.
	Addr string

	ca   *CA // the manufacturer of its EK certificates
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  bytes.Buffer
}

// Manufacture makes a new TPM in dir (a new EK, so a different TPM from every
// other): swtpm_setup with RSA and ECC EKs and their certificates signed by
// ca, a platform certificate, and the NV indices locked, as a vendor ships it.
func Manufacture(dir string, ca *CA) (*TPM, error) {
	setup, err := lookTool("swtpm_setup")
	if err != nil {
		return nil, err
	}
	if _, err := lookTool("swtpm"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating TPM state directory: %w", err)
	}
	cmd := exec.Command(setup, "--tpm2", "--tpmstate", dir,
		"--create-ek-cert", "--create-platform-cert", "--lock-nvram",
		"--config", ca.setupConf, "--overwrite")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("manufacturing TPM in %s: %w\n%s", dir, err, out)
	}
	return &TPM{Dir: dir, ca: ca}, nil
}

// Path is the TPM's address in the form certagent's tpm package opens
// ("tcp://127.0.0.1:P").
func (t *TPM) Path() string { return "tcp://" + t.Addr }

// Start runs swtpm on two free loopback ports (commands on P, control on
// P+1) with startup-clear, as a node's firmware would have left it, and waits
// until it accepts connections. A port taken in between is retried.
func (t *TPM) Start() error {
	bin, err := lookTool("swtpm")
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd != nil {
		return errors.New("swtpm already running")
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			return err
		}
		t.log.Reset()
		cmd := exec.Command(bin, "socket", "--tpm2",
			"--tpmstate", "dir="+t.Dir,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port+1),
			"--flags", "not-need-init,startup-clear")
		cmd.Stdout, cmd.Stderr = &t.log, &t.log
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting swtpm: %w", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if err := waitListening(addr, done, 10*time.Second); err != nil {
			_ = cmd.Process.Kill()
			<-done
			lastErr = fmt.Errorf("swtpm on %s: %w\n%s", addr, err, t.log.String())
			continue
		}
		t.cmd, t.done, t.Addr = cmd, done, addr
		return nil
	}
	return lastErr
}

// PID is the running swtpm's process ID, 0 when stopped.
func (t *TPM) PID() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd == nil {
		return 0
	}
	return t.cmd.Process.Pid
}

// Stop kills swtpm (a power cut: transient objects and sessions are gone, the
// seeds and NV stay in Dir) and waits for it to exit. Stopping a stopped TPM
// is a no-op.
func (t *TPM) Stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cmd == nil {
		return
	}
	_ = syscall.Kill(-t.cmd.Process.Pid, syscall.SIGKILL)
	<-t.done
	t.cmd, t.done = nil, nil
}

// Restart is a reboot: Stop, then Start (on new ports).
func (t *TPM) Restart() error {
	t.Stop()
	return t.Start()
}

func freePortPair() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("finding a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		_ = l.Close()
		if err == nil {
			_ = l2.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free pair of loopback ports")
}

func waitListening(addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		select {
		case <-exited:
			return errors.New("swtpm exited")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening after %v: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
