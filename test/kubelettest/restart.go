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
// does; it returns once the new process serves again (up to a minute), and
// how long it did not. Serving again is accepting TLS on its port and, once
// the Watch has a pod, running a command in it through the API server: a
// kubelet that has just started accepts TLS seconds before it knows its
// pods again, and until then `kubectl exec` meets "container not found".
func (k *Kubelet) Restart(ctx context.Context, t *testing.T) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { <-k.Exited; close(done) }()
	controlplane.Terminate(k.Cmd.Process, done, 10*time.Second)
	<-done
	k.Cmd, k.Exited = startLogging(t, k.Watch.Log, k.bin, k.args...)
	serves := func() bool {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: time.Second}, Config: &tls.Config{InsecureSkipVerify: true}}
		conn, err := d.DialContext(ctx, "tcp", k.Watch.Addr)
		if err != nil {
			return false
		}
		conn.Close()
		if k.Watch.Pod == "" || k.Watch.Kubectl == "" {
			return true
		}
		return k.Watch.ExecUncounted(ctx) == nil
	}
	for !serves() {
		select {
		case err := <-k.Exited:
			return 0, fmt.Errorf("the kubelet exited after its restart: %v", err)
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(start) > time.Minute {
			return 0, fmt.Errorf("the restarted kubelet does not serve on %s (and exec in %q) after a minute", k.Watch.Addr, k.Watch.Pod)
		}
	}
	return time.Since(start), nil
}
