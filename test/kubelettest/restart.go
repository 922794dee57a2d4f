package kubelettest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/certagent/certagent/test/controlplane"
)

// Restart stops the kubelet (SIGTERM, then SIGKILL after 10 s) and starts
// it again with the same flags and log, as `systemctl try-restart kubelet`
// does; it returns once the new process accepts TLS on its port (up to a
// minute), and how long the kubelet did not serve.
func (k *Kubelet) Restart(ctx context.Context, t *testing.T) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { <-k.Exited; close(done) }()
	controlplane.Terminate(k.Cmd.Process, done, 10*time.Second)
	<-done
	k.Cmd, k.Exited = startLogging(t, k.Watch.Log, k.bin, k.args...)
	for {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
		if conn, err := d.DialContext(ctx, "tcp", k.Watch.Addr); err == nil {
			conn.Close()
			return time.Since(start), nil
		}
		select {
		case err := <-k.Exited:
			return 0, fmt.Errorf("the kubelet exited after its restart: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > time.Minute {
			return 0, fmt.Errorf("the restarted kubelet does not serve on %s after a minute", k.Watch.Addr)
		}
	}
}
