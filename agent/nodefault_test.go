package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/agent/observe/observetest"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
)

// TestDaemonRecoversFromAFullDiskWithinAMinute: the client renewal fails
// because the certificate directory is full (ENOSPC as the write returns
// it), for two hours. Meanwhile the files in place stay as they were, no
// further CSR is made, STATUS says what the node waits for and how often it
// looks, the log and the Node's Events tell it once (not at every retry);
// once space is freed (nothing announces it) the certificate is renewed
// within a minute, without a person. Every jitter draw is the highest, so
// every wait is the longest the daemon can choose.
func TestDaemonRecoversFromAFullDiskWithinAMinute(t *testing.T) {
	sink := &observetest.Events{}
	var full atomic.Bool
	daemonTest(t, func(c *config.Config) {
		c.Rotation.RenewBefore = config.Duration{Duration: 20 * time.Hour} // due 4 h after issue, 20 h before expiry
		c.Serving.Enabled = new(bool)
	}, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(*rest.Config) (apiclient.EventClient, error) { return sink, nil })
		f.opts.Rand = func() float64 { return 0.999999 }
		inner := f.opts.Bootstrap
		f.opts.Bootstrap = func(bc *bootstrap.Config) {
			inner(bc)
			bc.BeforeStore = func(bootstrap.Kind) error {
				if !full.Load() {
					return nil
				}
				tmp := filepath.Join(f.cfg.CertDir, ".kubelet-client-2026.pem.tmp-certagent-42")
				return fmt.Errorf("writing %s: %w", tmp, &fs.PathError{Op: "write", Path: tmp, Err: syscall.ENOSPC})
			}
		}
		f.start()
		first := f.current(bootstrap.Client)
		if first == nil {
			t.Fatal("no client certificate after start")
		}
		before := snapshotFiles(t, f.cfg.Kubeconfig, bootstrap.CurrentPath(f.cfg.CertDir, bootstrap.Client))

		full.Store(true)
		f.advanceIn(4*time.Hour+time.Minute, 5*time.Second) // the renewal is due, and fails
		requestsBefore := len(f.client.Actions())
		failedBefore := f.failedAttempts()
		f.advanceIn(2*time.Hour+7*time.Second, 5*time.Second) // two hours of a full disk

		wantStatus := "no space left on " + f.cfg.CertDir + ": retrying every 45s at most (next "
		if st := f.notify.lastStatus(); !strings.HasPrefix(st, "client valid until ") || !strings.Contains(st, wantStatus) || !strings.HasSuffix(st, "); free some space there") {
			t.Errorf("STATUS %q while the disk is full, want it to say %q…; free some space there", st, wantStatus)
		}
		if after := snapshotFiles(t, f.cfg.Kubeconfig, bootstrap.CurrentPath(f.cfg.CertDir, bootstrap.Client)); after != before {
			t.Errorf("the files in place changed while the disk was full:\n%s\nwas\n%s", after, before)
		}
		if n := f.clientCSRObjects(); n != 2 {
			t.Errorf("%d client CSRs after two hours of a full disk, want 2 (the bootstrap's and the one renewal's, found again at each retry)", n)
		}
		attempts := f.failedAttempts() - failedBefore
		if attempts < uint64(2*time.Hour/(45*time.Second))-1 {
			t.Errorf("%d attempts in two hours of a full disk, want one every 45 s at most", attempts)
		}
		if attempts > 0 {
			t.Logf("%d attempts in two hours of a full disk, %.1f API requests each (the renewal's CSR found again)",
				attempts, float64(len(f.client.Actions())-requestsBefore)/float64(attempts))
		}
		if n := f.logged("waiting for the node"); n != 1 {
			t.Errorf("%q logged %d times in two hours, want once", "waiting for the node", n)
		}
		if n, p := countReason(sink, observe.ReasonRenewalFailing), seriesUpdates(sink); n != 1 || p != 0 {
			t.Errorf("%d %s Events and %d series updates for one full disk, want one Event", n, observe.ReasonRenewalFailing, p)
		}

		full.Store(false) // space freed; nothing tells certagent
		for waited := time.Duration(0); ; waited += time.Second {
			if cur := f.current(bootstrap.Client); cur != nil && cur.SerialNumber.Cmp(first.SerialNumber) != 0 {
				t.Logf("renewed %s after space was freed", waited)
				break
			}
			if waited >= time.Minute {
				t.Fatalf("not renewed a minute after space was freed; STATUS %q", f.notify.lastStatus())
			}
			f.advanceIn(time.Second, time.Second)
		}
		if st := f.notify.lastStatus(); !strings.HasPrefix(st, "client valid until ") || strings.Contains(st, "no space") {
			t.Errorf("STATUS after the renewal: %q", st)
		}
		if n := f.logged("no longer waiting for the node"); n != 1 {
			t.Errorf("%q logged %d times, want once", "no longer waiting for the node", n)
		}
	})
}

// failedAttempts counts the client certificate's failed attempts.
func (f *daemonFixture) failedAttempts() uint64 {
	return f.agent.certs.Get(bootstrap.Client).Errors
}

// clientCSRObjects counts the client CSRs on the server (not create calls).
func (f *daemonFixture) clientCSRObjects() int {
	list, err := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, csr := range list.Items {
		if csr.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName {
			n++
		}
	}
	return n
}

// snapshotFiles describes what each path holds: its link target and its content's digest.
func snapshotFiles(t *testing.T, paths ...string) string {
	t.Helper()
	var b strings.Builder
	for _, p := range paths {
		if target, err := os.Readlink(p); err == nil {
			fmt.Fprintf(&b, "%s -> %s\n", p, target)
			p = filepath.Join(filepath.Dir(p), target)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s: sha256 %x\n", p, sha256.Sum256(data))
	}
	return b.String()
}

func countReason(sink *observetest.Events, reason string) int {
	n := 0
	for _, r := range sink.Reasons() {
		if r == reason {
			n++
		}
	}
	return n
}

func seriesUpdates(sink *observetest.Events) int { return sink.PatchCount() }
