package agent

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// waiter runs WaitForKubelet for the fixture's files in the background.
type waiter struct {
	mu             sync.Mutex
	stdout, stderr bytes.Buffer
	done           chan error
}

func (w *waiter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stderr.Write(p)
}
func (w *waiter) out() string  { w.mu.Lock(); defer w.mu.Unlock(); return w.stdout.String() }
func (w *waiter) errs() string { w.mu.Lock(); defer w.mu.Unlock(); return w.stderr.String() }

func startWaiter(t *testing.T, f *daemonFixture, ctx context.Context, serving bool) *waiter {
	t.Helper()
	a, err := New(f.cfg, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	w := &waiter{done: make(chan error, 1)}
	out := writerFunc(func(p []byte) (int, error) { w.mu.Lock(); defer w.mu.Unlock(); return w.stdout.Write(p) })
	go func() { w.done <- a.WaitForKubelet(ctx, f.clk, serving, out, w) }()
	synctest.Wait()
	return w
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// approveServing has the fake signer issue every pending serving CSR.
func (f *daemonFixture) approveServing() {
	f.t.Helper()
	list, err := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, csr := range list.Items {
		if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName && len(csr.Status.Conditions) == 0 {
			f.sg.sign(&csr)
			if _, err := f.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(context.Background(), &csr, metav1.UpdateOptions{}); err != nil {
				f.t.Fatal(err)
			}
		}
	}
	synctest.Wait()
}

// TestWaitHoldsTheKubeletUntilItsServingCertificate: with the client
// certificate accepted and the serving CSR pending, certagent wait (the
// kubelet's ExecStartPre) blocks and says what it waits for; once the serving
// certificate is stored it returns.
func TestWaitHoldsTheKubeletUntilItsServingCertificate(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.pending.Store(true)
		f.start()
		w := startWaiter(t, f, context.Background(), true)
		f.advanceIn(time.Minute, time.Second)
		select {
		case err := <-w.done:
			t.Fatalf("returned while the serving CSR is pending: %v %q", err, w.out())
		default:
		}
		if !strings.Contains(w.errs(), "waiting: no valid serving certificate for this node in ") {
			t.Fatalf("stderr %q", w.errs())
		}
		f.approveServing()
		f.advanceIn(5*time.Second, time.Second)
		select {
		case err := <-w.done:
			if err != nil || !strings.Contains(w.out(), "kubelet.conf is accepted by the API server; the serving certificate is in place") {
				t.Fatalf("%v %q", err, w.out())
			}
		default:
			t.Fatal("still waiting after the serving certificate was stored")
		}
	})
}

// TestWaitWithoutServing: with serving off the client certificate is enough.
func TestWaitWithoutServing(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.pending.Store(true)
		f.start()
		w := startWaiter(t, f, context.Background(), false)
		if err := <-w.done; err != nil || !strings.Contains(w.out(), "kubelet.conf is accepted by the API server\n") {
			t.Fatalf("%v %q", err, w.out())
		}
	})
}

// TestWaitBeforeAnyCertificate: on a node that has not bootstrapped, it
// waits for the client certificate, and gives up after --timeout with the
// reason.
func TestWaitBeforeAnyCertificate(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w := startWaiter(t, f, ctx, true)
		time.Sleep(11 * time.Second) // the bubble's clock: the timeout passes
		synctest.Wait()
		err := <-w.done
		if err == nil || !strings.Contains(err.Error(), "gave up waiting: no valid client certificate in ") {
			t.Fatalf("%v", err)
		}
	})
}

// TestWaitDoesNotHoldAKubeletThatRunsTheAPIServer: the files are valid but
// the API server cannot be reached at all (a control-plane node whose kubelet
// runs it): wait returns, saying it could not confirm. A rejection (401), by
// contrast, keeps it waiting.
func TestWaitDoesNotHoldAKubeletThatRunsTheAPIServer(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.start()
		f.stop()
		f.identity = func(*rest.Config) error {
			return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
		}
		w := startWaiter(t, f, context.Background(), true)
		if err := <-w.done; err != nil || !strings.Contains(w.out(), "could not be asked to confirm it") {
			t.Fatalf("%v %q", err, w.out())
		}

		f.identity = func(*rest.Config) error { return apierrors.NewUnauthorized("Unauthorized") }
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		w = startWaiter(t, f, ctx, true)
		time.Sleep(3 * time.Minute)
		synctest.Wait()
		if err := <-w.done; err == nil || !strings.Contains(err.Error(), "gave up waiting") || !strings.Contains(w.errs(), "Unauthorized") {
			t.Fatalf("%v %q", err, w.errs())
		}
	})
}
