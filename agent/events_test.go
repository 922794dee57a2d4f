package agent

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	certificatesv1 "k8s.io/api/certificates/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/bootstrap"
)

// fakeEvents is an EventClient that keeps what it was sent.
type fakeEvents struct {
	mu      sync.Mutex
	created []*eventsv1.Event
	patches map[string][]map[string]any
}

func (f *fakeEvents) Create(_ context.Context, e *eventsv1.Event) (*eventsv1.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, e.DeepCopy())
	return e, nil
}

func (f *fakeEvents) Patch(_ context.Context, ns, name string, patch []byte) error {
	var p map[string]any
	if err := json.Unmarshal(patch, &p); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.patches == nil {
		f.patches = map[string][]map[string]any{}
	}
	f.patches[ns+"/"+name] = append(f.patches[ns+"/"+name], p)
	return nil
}

func (f *fakeEvents) reasons() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.created {
		out = append(out, e.Reason)
	}
	return out
}

func (f *fakeEvents) find(reason string) *eventsv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.created {
		if e.Reason == reason {
			return e
		}
	}
	return nil
}

// TestEventsOnTheNode: the daemon records, with the node's credential, the
// Events an operator needs from kubectl: certificates issued (with
// NotAfter), the bootstrap kubeconfig removed, a serving CSR waiting (with
// the approve command), a denied CSR (who and why), renewals.
func TestEventsOnTheNode(t *testing.T) {
	sink := &fakeEvents{}
	var creds []string
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(rc *rest.Config) (bootstrap.EventClient, error) {
			leaf, err := bootstrap.ClientCertificate(rc)
			if err != nil {
				return nil, err
			}
			creds = append(creds, leaf.Subject.CommonName)
			return sink, nil
		})
		f.pending.Store(true)
		f.start()
		if sink.find(ReasonServingCSRPending) != nil {
			t.Fatalf("%s before the CSR waited %s", ReasonServingCSRPending, servingPendingAfter)
		}
		f.advanceIn(servingPendingAfter, time.Second)
		for _, r := range []string{ReasonCertificateIssued, ReasonServingCSRPending} {
			if sink.find(r) == nil {
				t.Fatalf("no %s event; got %v", r, sink.reasons())
			}
		}
		if sink.find(ReasonBootstrapRemoved) != nil {
			t.Errorf("a %s Event of its own for a bootstrap; got %v", ReasonBootstrapRemoved, sink.reasons())
		}
		e := sink.find(ReasonServingCSRPending)
		if !strings.Contains(e.Note, "kubectl certificate approve node-csr-") || e.Type != "Normal" {
			t.Errorf("pending event: %s %q", e.Type, e.Note)
		}
		if e.Regarding.Kind != "Node" || e.Regarding.Name != "node-a" || e.Namespace != "default" || e.ReportingController != EventsComponent || e.Action == "" || e.EventTime.IsZero() {
			t.Errorf("event fields: %+v", e)
		}
		issued := sink.find(ReasonCertificateIssued)
		want := stamp(f.current(bootstrap.Client).NotAfter)
		if !strings.Contains(issued.Note, "client certificate stored; valid until "+want) {
			t.Errorf("issued event note %q, want NotAfter %s", issued.Note, want)
		}
		if !strings.Contains(issued.Note, "; removed the bootstrap kubeconfig "+f.cfg.BootstrapKubeconfig+": kubelet.conf is proven to work") {
			t.Errorf("issued event note %q does not say the bootstrap kubeconfig was removed", issued.Note)
		}
		for _, cn := range creds {
			if cn != "system:node:node-a" {
				t.Errorf("an event was written as %q, not with the node's credential", cn)
			}
		}

		// The pending serving CSR is denied by a person.
		f.pending.Store(false)
		list, err := f.client.CertificatesV1().CertificateSigningRequests().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, csr := range list.Items {
			if csr.Spec.SignerName == certificatesv1.KubeletServingSignerName {
				csr.Status.Conditions = []certificatesv1.CertificateSigningRequestCondition{{Type: certificatesv1.CertificateDenied, Status: "True",
					Reason: "NotOurNode", Message: "the serving certificate names an address the node does not have"}}
				if _, err := f.client.CertificatesV1().CertificateSigningRequests().UpdateStatus(context.Background(), &csr, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
		}
		synctest.Wait()
		d := sink.find(ReasonCSRDenied)
		if d == nil {
			t.Fatalf("no %s event; got %v", ReasonCSRDenied, sink.reasons())
		}
		if d.Type != "Warning" || !strings.Contains(d.Note, "denied") || !strings.Contains(d.Note, "NotOurNode") {
			t.Errorf("denied event: %s %q", d.Type, d.Note)
		}
		f.deny.Store(false)
		f.advance(24 * time.Hour)
		if sink.find(ReasonCertificateRenewed) == nil {
			t.Errorf("no %s event after a day; got %v", ReasonCertificateRenewed, sink.reasons())
		}
	})
}

// TestBootstrapWritesTwoEvents: with an approver that answers at once, a
// node's bootstrap writes two Events (the client certificate issued, which
// also tells that the bootstrap kubeconfig was removed, and the serving
// certificate issued), and nothing later; a bootstrap kubeconfig dropped
// beside a working kubelet.conf, and removed, gets an Event of its own.
func TestBootstrapWritesTwoEvents(t *testing.T) {
	sink := &fakeEvents{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(*rest.Config) (bootstrap.EventClient, error) { return sink, nil })
		f.start()
		f.advanceIn(2*servingPendingAfter, time.Second)
		got := sink.reasons()
		if want := []string{ReasonCertificateIssued, ReasonCertificateIssued}; !slices.Equal(got, want) {
			t.Fatalf("bootstrap Events %v, want %v", got, want)
		}

		f.writeBootstrap()
		f.fileEvent()
		f.advanceIn(time.Second, time.Second)
		if _, err := os.Stat(f.cfg.BootstrapKubeconfig); err == nil {
			t.Fatal("the dropped bootstrap kubeconfig was not removed")
		}
		e := sink.find(ReasonBootstrapRemoved)
		if e == nil || !strings.Contains(e.Note, "removed the bootstrap kubeconfig "+f.cfg.BootstrapKubeconfig) {
			t.Fatalf("no %s Event naming %s; got %v", ReasonBootstrapRemoved, f.cfg.BootstrapKubeconfig, sink.reasons())
		}
		if n := len(sink.reasons()); n != 3 {
			t.Errorf("%d Events after the removal, want 3: %v", n, sink.reasons())
		}
	})
}

// TestEventsAreRateLimitedAndAggregated: a node failing every few seconds
// for hours writes a handful of Events, the repeats folded into the first
// one's series (count and last time), at most one write a minute.
func TestEventsAreRateLimitedAndAggregated(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC))
	sink := &fakeEvents{}
	r := newEventRecorder(zap.NewNop(), clk, "node-a", func() (bootstrap.EventClient, error) { return sink, nil })
	ctx := context.Background()
	failing := nodeEvent{typ: "Warning", reason: ReasonRenewalFailing, action: "RequestCertificate", kind: bootstrap.Client, note: "API server unreachable"}
	writes := 0
	for i := 0; i < 3*3600/5; i++ { // every 5 s for 3 hours
		if err := r.write(ctx, failing); err != nil {
			t.Fatal(err)
		}
		clk.Step(5 * time.Second)
	}
	writes = len(sink.created)
	patches := 0
	for _, p := range sink.patches {
		patches += len(p)
	}
	if writes != 1 {
		t.Errorf("%d Events created for one repeating failure, want 1", writes)
	}
	if patches > 3*60 || patches < 60 {
		t.Errorf("%d series updates in 3 hours, want one a minute at most", patches)
	}
	var last map[string]any
	for _, p := range sink.patches {
		last = p[len(p)-1]
	}
	series := last["series"].(map[string]any)
	if c := series["count"].(float64); c < 3*3600/5-12 {
		t.Errorf("series count %v, want about %d", c, 3*3600/5)
	}

	// Distinct events: a burst of 10, then one a minute.
	sink2 := &fakeEvents{}
	r2 := newEventRecorder(zap.NewNop(), clk, "node-a", func() (bootstrap.EventClient, error) { return sink2, nil })
	limited := 0
	for i := 0; i < 30; i++ {
		e := nodeEvent{typ: "Normal", reason: ReasonCertificateIssued, action: "Issue", kind: bootstrap.Kind(strings.Repeat("k", i+1))}
		if err := r2.write(ctx, e); err != nil {
			limited++
		}
	}
	if len(sink2.created) != eventBurst || limited != 30-eventBurst {
		t.Errorf("30 distinct events at once: %d written, %d limited; want %d written", len(sink2.created), limited, eventBurst)
	}
	clk.Step(eventRefill)
	if err := r2.write(ctx, nodeEvent{typ: "Normal", reason: "Other", action: "Issue"}); err != nil {
		t.Errorf("no write allowed a minute later: %v", err)
	}
}

// TestEventRecordNeverBlocks: with nobody writing, record drops instead of
// holding up a worker: ten queues' worth of events are recorded without
// blocking (the bubble sees a blocked send at once, no timeout needed), the
// queue holds the first eventQueue and the rest are dropped; with Events
// off (a nil recorder) record does nothing.
func TestEventRecordNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newEventRecorder(zap.NewNop(), clocktesting.NewFakeClock(time.Now()), "n", nil)
		var nilRecorder *eventRecorder
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 10*eventQueue; i++ {
				r.record(nodeEvent{reason: "x", note: strconv.Itoa(i)})
			}
			nilRecorder.record(nodeEvent{reason: "x"}) // Events off
		}()
		synctest.Wait() // until the recording goroutine ends or blocks for good
		select {
		case <-done:
		default:
			t.Error("record blocked with the queue full and nobody writing")
			for { // let it finish, so that the bubble can end
				select {
				case <-r.queue:
				case <-done:
					return
				}
			}
		}
		if n := len(r.queue); n != eventQueue {
			t.Fatalf("%d events queued after %d recorded, want the queue full (%d)", n, 10*eventQueue, eventQueue)
		}
		if first := <-r.queue; first.note != "0" {
			t.Fatalf("the queue's first event is %q: the earliest events must be kept, the overflow dropped", first.note)
		}
	})
}

// TestIssuedEventWrittenWhenItHappens: in the daemon, the client
// certificate (issued at once) is told at once, and so is the serving
// certificate approved after 20 s: an Event is written when it happens, not
// held back by the node for as long as the CSR waited (a person's wait, not
// the control plane's load); the ServingCSRPending Event comes 15 s into the
// wait.
func TestIssuedEventWrittenWhenItHappens(t *testing.T) {
	sink := &fakeEvents{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(*rest.Config) (bootstrap.EventClient, error) { return sink, nil })
		f.opts.Rand = func() float64 { return 0.5 }
		f.pending.Store(true)
		f.start()
		f.advanceIn(time.Second, 100*time.Millisecond)
		if got, want := sink.reasons(), []string{ReasonCertificateIssued}; !slices.Equal(got, want) {
			t.Fatalf("Events after the client certificate: %v, want %v", got, want)
		}
		f.advanceIn(19*time.Second, 100*time.Millisecond)
		if got, want := sink.reasons(), []string{ReasonCertificateIssued, ReasonServingCSRPending}; !slices.Equal(got, want) {
			t.Fatalf("Events while the serving CSR waits 20 s: %v, want %v", got, want)
		}
		f.approveServing()
		if f.current(bootstrap.Serving) == nil {
			t.Fatal("the serving certificate was not stored once approved")
		}
		f.advanceIn(100*time.Millisecond, 100*time.Millisecond)
		want := []string{ReasonCertificateIssued, ReasonServingCSRPending, ReasonCertificateIssued}
		if got := sink.reasons(); !slices.Equal(got, want) {
			t.Fatalf("Events 100 ms after the serving certificate was stored: %v, want %v", got, want)
		}
	})
}
