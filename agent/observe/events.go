package observe

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
	"github.com/certagent/certagent/rotate"
)

// Kubernetes Events on the Node (docs/metrics.md, "Events"): what an
// operator must see from kubectl without logging in to the node. They are
// written with the node's own credential (kubelet.conf), so there are none
// before the node has one: a denied client CSR is in the log and the
// metrics only.

// Event reasons.
const (
	ReasonCertificateIssued  = "CertificateIssued"
	ReasonCertificateRenewed = "CertificateRenewed"
	ReasonServingCSRPending  = "ServingCSRPending"
	ReasonServingNames       = "ServingNamesNotOnNode"
	ReasonCSRDenied          = "CSRDenied"
	ReasonRenewalFailing     = "CertificateRenewalFailing"
	ReasonBootstrapRemoved   = "BootstrapKubeconfigRemoved"
)

// EventsComponent is reportingController of certagent's Events.
const EventsComponent = "certagent.io/certagent"

// Limits that keep a failing node from flooding the API server: a token
// bucket for writes, and repeats of one event folded into its series.
const (
	eventBurst     = 10
	eventRefill    = time.Minute      // one more write allowed per refill
	eventSeriesFor = 10 * time.Minute // a repeat within this is the same event
	eventPatchGap  = time.Minute      // a series is written at most this often
	eventQueue     = 32
	// A serving CSR still waiting this long gets a ServingCSRPending Event;
	// an approver that answers sooner leaves none.
	ServingPendingAfter = 15 * time.Second
)

type nodeEvent struct {
	typ, reason, action, note string
	kind                      bootstrap.Kind
	// after, if set, is how long what the event tells must last before it
	// is written (a serving CSR still waiting); it is written then only if
	// still (if set) says it still holds. Every other Event is written when
	// it happens.
	after time.Duration
	still func() bool
}

// eventSeries is an Event already written, and the repeats since.
type eventSeries struct {
	namespace, name     string
	count               int32
	lastSeen, lastWrite time.Time
	written             int32 // count as last written
}

// Events writes the node's Events in the background (Run); recording one
// never blocks.
type Events struct {
	log    *zap.Logger
	clock  clock.Clock
	node   string
	client func() (apiclient.EventClient, error)
	queue  chan nodeEvent
	// Wrote, if set, hears that Run tried to write an Event (the daemon
	// closes its idle connections once such work is over).
	Wrote func()

	// owned by Run
	tokens float64
	filled time.Time
	series map[string]*eventSeries
}

// NewEvents writes the Events of node with the client client returns when
// one is written (nil: none can be).
func NewEvents(log *zap.Logger, clk clock.Clock, node string, client func() (apiclient.EventClient, error)) *Events {
	return &Events{log: log, clock: clk, node: node, client: client,
		queue: make(chan nodeEvent, eventQueue), tokens: eventBurst, series: map[string]*eventSeries{}}
}

// record queues e; a full queue drops it (the log has it anyway).
func (r *Events) record(e nodeEvent) {
	if r == nil {
		return
	}
	r.enqueue(e)
}

// enqueue hands e to Run; a full queue drops it.
func (r *Events) enqueue(e nodeEvent) {
	select {
	case r.queue <- e:
	default:
		r.log.Debug("event dropped: queue full", zap.String("reason", e.reason))
	}
}

// later queues e again after e.after, if e.still still holds then.
func (r *Events) later(ctx context.Context, e nodeEvent) {
	select {
	case <-ctx.Done():
		return
	case <-r.clock.After(e.after):
	}
	if e.still == nil || e.still() {
		e.after, e.still = 0, nil
		r.enqueue(e)
	}
}

// Run writes queued events until ctx ends.
func (r *Events) Run(ctx context.Context) {
	r.filled = r.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-r.queue:
			if e.after > 0 {
				go r.later(ctx, e)
				continue
			}
			if err := r.write(ctx, e); err != nil {
				r.log.Debug("event not written", zap.String("reason", e.reason), zap.Error(err))
			}
			if r.Wrote != nil {
				r.Wrote()
			}
		}
	}
}

// take spends a write token if one is left.
func (r *Events) take(now time.Time) bool {
	if d := now.Sub(r.filled); d > 0 {
		r.tokens = min(eventBurst, r.tokens+float64(d)/float64(eventRefill))
	}
	r.filled = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}

func (r *Events) write(ctx context.Context, e nodeEvent) error {
	now := r.clock.Now()
	key := e.typ + "/" + e.reason + "/" + string(e.kind)
	if s := r.series[key]; s != nil && now.Sub(s.lastSeen) < eventSeriesFor {
		return r.repeat(ctx, s, e, now)
	}
	if !r.take(now) {
		return fmt.Errorf("rate limited (%d writes, then one a %s)", eventBurst, eventRefill)
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, apiclient.RequestTimeout)
	defer cancel()
	out, err := c.Create(wctx, r.event(e, now))
	if err != nil {
		return fmt.Errorf("creating event: %w", err)
	}
	r.series[key] = &eventSeries{namespace: out.Namespace, name: out.Name, count: 1, written: 1, lastSeen: now, lastWrite: now}
	for k, s := range r.series { // forget old series
		if now.Sub(s.lastSeen) >= eventSeriesFor {
			delete(r.series, k)
		}
	}
	return nil
}

// repeat counts e, a repeat of the Event of series s, and writes the count
// into it at most every eventPatchGap, when a write token is left.
func (r *Events) repeat(ctx context.Context, s *eventSeries, e nodeEvent, now time.Time) error {
	s.count++
	s.lastSeen = now
	if now.Sub(s.lastWrite) < eventPatchGap || !r.take(now) {
		return nil // counted; written with a later repeat
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	patch, _ := json.Marshal(map[string]any{
		"note":   truncateNote(e.note),
		"series": eventsv1.EventSeries{Count: s.count, LastObservedTime: metav1.NewMicroTime(now)},
	})
	wctx, cancel := context.WithTimeout(ctx, apiclient.RequestTimeout)
	defer cancel()
	if err := c.Patch(wctx, s.namespace, s.name, patch); err != nil {
		return fmt.Errorf("updating event %s/%s: %w", s.namespace, s.name, err)
	}
	s.lastWrite, s.written = now, s.count
	return nil
}

// event is the events.k8s.io Event e on the Node at now.
func (r *Events) event(e nodeEvent, now time.Time) *eventsv1.Event {
	return &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", r.node, now.UnixNano()),
			Namespace: metav1.NamespaceDefault, // where the kubelet puts Node events
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: EventsComponent,
		ReportingInstance:   EventsComponent + "-" + r.node,
		Action:              e.action,
		Reason:              e.reason,
		Type:                e.typ,
		Note:                truncateNote(e.note),
		// As the kubelet refers to its Node (UID = name), so that
		// kubectl describe node shows them.
		Regarding: corev1.ObjectReference{Kind: "Node", APIVersion: "v1", Name: r.node, UID: types.UID(r.node)},
	}
}

// truncateNote keeps a note within the API's 1 kB.
func truncateNote(s string) string {
	const max = 1024
	if len(s) <= max {
		return s
	}
	return s[:max-3] + "..."
}

// certName is how Events name a certificate.
func certName(kind bootstrap.Kind) string {
	if kind == bootstrap.Serving {
		return "serving"
	}
	return "client"
}

// Outcome turns a step's outcome into an Event on the Node, if it is one a
// person should see from kubectl: a certificate stored, a CSR denied, an
// attempt failed, but not a retry that failed as the last one did for a
// fault of the node (repeatedFault), which comes every few seconds. removed
// is the bootstrap kubeconfig the step removed, if any: told in the client
// certificate's CertificateIssued, or on its own. signedBy names the CA of a
// stored certificate for people ("" if unknown).
func (r *Events) Outcome(kind bootstrap.Kind, o rotate.Outcome, repeatedFault bool, removed, signedBy string) {
	name := certName(kind)
	removedNote := fmt.Sprintf("removed the bootstrap kubeconfig %s: kubelet.conf is proven to work", removed)
	switch {
	case o.Class == rotate.Done && o.Stored:
		reason, action := ReasonCertificateIssued, "Issue"
		if o.Renew {
			reason, action = ReasonCertificateRenewed, "Renew"
		}
		note := fmt.Sprintf("%s certificate stored; valid until %s, renewal due %s", name, stamp(o.Cert.NotAfter), stamp(o.Next))
		if signedBy != "" {
			note += "; signed by CA " + signedBy
		}
		if removed != "" {
			note += "; " + removedNote // one write for the whole bootstrap
			removed = ""
		}
		r.record(nodeEvent{typ: corev1.EventTypeNormal, reason: reason, action: action, kind: kind, note: note})
	case IsDenied(o.Err):
		r.record(nodeEvent{typ: corev1.EventTypeWarning, reason: ReasonCSRDenied, action: "RequestCertificate", kind: kind,
			note: fmt.Sprintf("%s certificate: %v", name, o.Err)})
	case o.Class == rotate.Transient || o.Class == rotate.NeedsPerson || (o.Class == rotate.NodeFault && !repeatedFault):
		r.record(nodeEvent{typ: corev1.EventTypeWarning, reason: ReasonRenewalFailing, action: "RequestCertificate", kind: kind,
			note: fmt.Sprintf("%s certificate: attempt %d failed, next at %s: %v", name, o.Failure, stamp(o.Next), o.Err)})
	}
	if removed != "" {
		r.record(nodeEvent{typ: corev1.EventTypeNormal, reason: ReasonBootstrapRemoved, action: "Cleanup", note: removedNote})
	}
}
