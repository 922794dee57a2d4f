package observe

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/certagent/certagent/agent/observe/observetest"
	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/bootstrap/apiclient"
)

// TestEventsAreRateLimitedAndAggregated: a node failing every few seconds
// for hours writes a handful of Events, the repeats folded into the first
// one's series (count and last time), at most one write a minute.
func TestEventsAreRateLimitedAndAggregated(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC))
	sink := &observetest.Events{}
	r := NewEvents(zap.NewNop(), clk, "node-a", func() (apiclient.EventClient, error) { return sink, nil })
	ctx := context.Background()
	failing := nodeEvent{typ: "Warning", reason: ReasonRenewalFailing, action: "RequestCertificate", kind: bootstrap.Client, note: "API server unreachable"}
	writes := 0
	for i := 0; i < 3*3600/5; i++ { // every 5 s for 3 hours
		if err := r.write(ctx, failing); err != nil {
			t.Fatal(err)
		}
		clk.Step(5 * time.Second)
	}
	writes = sink.Created()
	patches := sink.PatchCount()
	if writes != 1 {
		t.Errorf("%d Events created for one repeating failure, want 1", writes)
	}
	if patches > 3*60 || patches < 60 {
		t.Errorf("%d series updates in 3 hours, want one a minute at most", patches)
	}
	var last map[string]any
	for _, p := range sink.Patches() {
		last = p[len(p)-1]
	}
	series := last["series"].(map[string]any)
	if c := series["count"].(float64); c < 3*3600/5-12 {
		t.Errorf("series count %v, want about %d", c, 3*3600/5)
	}

	// Distinct events: a burst of 10, then one a minute.
	sink2 := &observetest.Events{}
	r2 := NewEvents(zap.NewNop(), clk, "node-a", func() (apiclient.EventClient, error) { return sink2, nil })
	limited := 0
	for i := 0; i < 30; i++ {
		e := nodeEvent{typ: "Normal", reason: ReasonCertificateIssued, action: "Issue", kind: bootstrap.Kind(strings.Repeat("k", i+1))}
		if err := r2.write(ctx, e); err != nil {
			limited++
		}
	}
	if sink2.Created() != eventBurst || limited != 30-eventBurst {
		t.Errorf("30 distinct events at once: %d written, %d limited; want %d written", sink2.Created(), limited, eventBurst)
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
		r := NewEvents(zap.NewNop(), clocktesting.NewFakeClock(time.Now()), "n", nil)
		var nilRecorder *Events
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
