// Package observetest holds fakes for the tests of the packages that write
// certagent's Events (node side). It is linked into tests only.
package observetest

import (
	"context"
	"encoding/json"
	"maps"
	"sync"

	eventsv1 "k8s.io/api/events/v1"
)

// Events is a bootstrap.EventClient that keeps what it was sent.
type Events struct {
	mu      sync.Mutex
	created []*eventsv1.Event
	patches map[string][]map[string]any // by namespace/name
}

// Create keeps e.
func (f *Events) Create(_ context.Context, e *eventsv1.Event) (*eventsv1.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, e.DeepCopy())
	return e, nil
}

// Patch keeps the merge patch of the Event ns/name.
func (f *Events) Patch(_ context.Context, ns, name string, patch []byte) error {
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

// Reasons are the reasons of the Events created, in order.
func (f *Events) Reasons() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, e := range f.created {
		out = append(out, e.Reason)
	}
	return out
}

// Find is the first Event created with reason, nil if none.
func (f *Events) Find(reason string) *eventsv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.created {
		if e.Reason == reason {
			return e
		}
	}
	return nil
}

// Created is the number of Events created.
func (f *Events) Created() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.created)
}

// Patches are the patches sent, by namespace/name of their Event.
func (f *Events) Patches() map[string][]map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.patches)
}

// PatchCount is the number of patches sent.
func (f *Events) PatchCount() int {
	n := 0
	for _, p := range f.Patches() {
		n += len(p)
	}
	return n
}
