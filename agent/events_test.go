package agent

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/agent/observe"
	"github.com/certagent/certagent/agent/observe/observetest"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
)

// TestEventsOnTheNode: the daemon records, with the node's credential, the
// Events an operator needs from kubectl: certificates issued (with
// NotAfter), the bootstrap kubeconfig removed, a serving CSR waiting (with
// the approve command), a denied CSR (who and why), renewals.
func TestEventsOnTheNode(t *testing.T) {
	sink := &observetest.Events{}
	var creds []string
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(rc *rest.Config) (apiclient.EventClient, error) {
			leaf, err := bootstrap.ClientCertificate(rc)
			if err != nil {
				return nil, err
			}
			creds = append(creds, leaf.Subject.CommonName)
			return sink, nil
		})
		f.pending.Store(true)
		f.start()
		if sink.Find(observe.ReasonServingCSRPending) != nil {
			t.Fatalf("%s before the CSR waited %s", observe.ReasonServingCSRPending, observe.ServingPendingAfter)
		}
		f.advanceIn(observe.ServingPendingAfter, time.Second)
		for _, r := range []string{observe.ReasonCertificateIssued, observe.ReasonServingCSRPending} {
			if sink.Find(r) == nil {
				t.Fatalf("no %s event; got %v", r, sink.Reasons())
			}
		}
		if sink.Find(observe.ReasonBootstrapRemoved) != nil {
			t.Errorf("a %s Event of its own for a bootstrap; got %v", observe.ReasonBootstrapRemoved, sink.Reasons())
		}
		e := sink.Find(observe.ReasonServingCSRPending)
		if !strings.Contains(e.Note, "kubectl certificate approve node-csr-") || e.Type != "Normal" {
			t.Errorf("pending event: %s %q", e.Type, e.Note)
		}
		if e.Regarding.Kind != "Node" || e.Regarding.Name != "node-a" || e.Namespace != "default" || e.ReportingController != observe.EventsComponent || e.Action == "" || e.EventTime.IsZero() {
			t.Errorf("event fields: %+v", e)
		}
		issued := sink.Find(observe.ReasonCertificateIssued)
		want := f.current(bootstrap.Client).NotAfter.UTC().Format("2006-01-02 15:04Z")
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
		d := sink.Find(observe.ReasonCSRDenied)
		if d == nil {
			t.Fatalf("no %s event; got %v", observe.ReasonCSRDenied, sink.Reasons())
		}
		if d.Type != "Warning" || !strings.Contains(d.Note, "denied") || !strings.Contains(d.Note, "NotOurNode") {
			t.Errorf("denied event: %s %q", d.Type, d.Note)
		}
		f.deny.Store(false)
		f.advance(24 * time.Hour)
		if sink.Find(observe.ReasonCertificateRenewed) == nil {
			t.Errorf("no %s event after a day; got %v", observe.ReasonCertificateRenewed, sink.Reasons())
		}
	})
}

// TestBootstrapWritesTwoEvents: with an approver that answers at once, a
// node's bootstrap writes two Events (the client certificate issued, which
// also tells that the bootstrap kubeconfig was removed, and the serving
// certificate issued), and nothing later; a bootstrap kubeconfig dropped
// beside a working kubelet.conf, and removed, gets an Event of its own.
func TestBootstrapWritesTwoEvents(t *testing.T) {
	sink := &observetest.Events{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(*rest.Config) (apiclient.EventClient, error) { return sink, nil })
		f.start()
		f.advanceIn(2*observe.ServingPendingAfter, time.Second)
		got := sink.Reasons()
		if want := []string{observe.ReasonCertificateIssued, observe.ReasonCertificateIssued}; !slices.Equal(got, want) {
			t.Fatalf("bootstrap Events %v, want %v", got, want)
		}

		f.writeBootstrap()
		f.fileEvent()
		f.advanceIn(time.Second, time.Second)
		if _, err := os.Stat(f.cfg.BootstrapKubeconfig); err == nil {
			t.Fatal("the dropped bootstrap kubeconfig was not removed")
		}
		e := sink.Find(observe.ReasonBootstrapRemoved)
		if e == nil || !strings.Contains(e.Note, "removed the bootstrap kubeconfig "+f.cfg.BootstrapKubeconfig) {
			t.Fatalf("no %s Event naming %s; got %v", observe.ReasonBootstrapRemoved, f.cfg.BootstrapKubeconfig, sink.Reasons())
		}
		if n := len(sink.Reasons()); n != 3 {
			t.Errorf("%d Events after the removal, want 3: %v", n, sink.Reasons())
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
	sink := &observetest.Events{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		f.eventsTo(func(*rest.Config) (apiclient.EventClient, error) { return sink, nil })
		f.opts.Rand = func() float64 { return 0.5 }
		f.pending.Store(true)
		f.start()
		f.advanceIn(time.Second, 100*time.Millisecond)
		if got, want := sink.Reasons(), []string{observe.ReasonCertificateIssued}; !slices.Equal(got, want) {
			t.Fatalf("Events after the client certificate: %v, want %v", got, want)
		}
		f.advanceIn(19*time.Second, 100*time.Millisecond)
		if got, want := sink.Reasons(), []string{observe.ReasonCertificateIssued, observe.ReasonServingCSRPending}; !slices.Equal(got, want) {
			t.Fatalf("Events while the serving CSR waits 20 s: %v, want %v", got, want)
		}
		f.approveServing()
		if f.current(bootstrap.Serving) == nil {
			t.Fatal("the serving certificate was not stored once approved")
		}
		f.advanceIn(100*time.Millisecond, 100*time.Millisecond)
		want := []string{observe.ReasonCertificateIssued, observe.ReasonServingCSRPending, observe.ReasonCertificateIssued}
		if got := sink.Reasons(); !slices.Equal(got, want) {
			t.Fatalf("Events 100 ms after the serving certificate was stored: %v, want %v", got, want)
		}
	})
}
