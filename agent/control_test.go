package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/certagent/certagent/agent/config"
)

// TestControlSocketDropsASilentClient: a client of the control socket that
// connects and sends nothing does not hold the daemon's handler: its
// connection is closed once the read timeout has passed, and a client that
// asks meanwhile is answered.
func TestControlSocketDropsASilentClient(t *testing.T) {
	cfg := config.Default()
	dir := t.TempDir()
	cfg.NodeName, cfg.CertDir = "node-a", dir
	cfg.Kubeconfig, cfg.BootstrapKubeconfig = filepath.Join(dir, "kubelet.conf"), filepath.Join(dir, "bootstrap.conf")
	a, err := New(cfg, Options{Notifier: NopNotifier{}, NoControlSocket: true})
	if err != nil {
		t.Fatal(err)
	}
	a.controlTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stop, err := a.serveControl(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	silent, err := net.Dial("unix", filepath.Join(dir, socketName))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// Another client is answered while the silent one waits (no loop runs
	// here: the answer says so).
	res, err := askDaemon(ctx, dir, controlRequest{})
	if err != nil || len(res) == 0 || res[0].Error == "" {
		t.Fatalf("a client beside the silent one: %v, %v", res, err)
	}
	start := time.Now()
	_ = silent.SetReadDeadline(start.Add(5 * time.Second))
	n, err := silent.Read(make([]byte, 1))
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("the daemon still holds a client that sent nothing %s after it connected", time.Since(start).Round(time.Millisecond))
	case err != io.EOF || n != 0:
		t.Fatalf("reading from the silent client's connection: %d bytes, %v; want the daemon to close it", n, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the silent client was dropped after %s, want about %s", took, a.controlTimeout)
	}
}
