package fleet

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/certagent/certagent/test/controlplane"
)

// approverTimeout bounds the wait of a fleet of n for its serving
// certificates: 100 nodes took 7–15 s here; a refused CSR is never approved.
func approverTimeout(n int) time.Duration { return time.Minute + time.Duration(n)*time.Second }

// approverRun runs n certagent daemons, each in its network namespace with
// its Node made first, with a's approver started just before them, and
// measures it: each serving CSR's creation to its approval as one watch
// saw them, the time until every serving certificate is on disk, the
// approver's requests (audit log), CPU and peak RSS.
func approverRun(t *testing.T, c *cluster, a approverUnderTest, n int) *ApproverRun {
	t.Helper()
	c.deleteCSRs(t)
	f := newFleet(t, c, certagentPath, a.prefix, n, "")
	for i, m := range f.members {
		m.netns = fmt.Sprintf("cfl-%04d", i+1)
	}
	makeNodes(t, c, f)
	ctx, cancel := context.WithCancel(context.Background())
	seen := &csrTimes{created: map[string]time.Time{}, approved: map[string]time.Time{}, reasons: map[string]int{}}
	watching := make(chan struct{})
	go seen.watch(ctx, c, watching)
	defer cancel()
	<-watching
	started := time.Now()
	proc, err := a.start()
	if err != nil {
		t.Fatal(err)
	}
	f.run(t)
	done := f.waitAll(t, "their serving certificates", approverTimeout(n), hasServing)
	time.Sleep(2 * time.Second) // the approver's last writes and Events
	// Its whole life: start-up, the fleet, the 2 s after.
	cpu, err := cpuSeconds(proc.PID())
	if err != nil {
		t.Fatal(err)
	}
	hwm, err := statusKiB(proc.PID(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	proc.Stop()
	cancel()
	evs, err := c.AuditEvents(started, time.Now(), func(ev controlplane.AuditEvent) bool { return ev.User.Username == a.user })
	if err != nil {
		t.Fatal(err)
	}
	r := &ApproverRun{Approver: a.name, N: n, AllStored: done.Sub(f.start), Requests: map[string]int{}, CPU: cpu, PeakRSSKiB: hwm}
	for _, ev := range evs {
		r.Requests[requestKey(ev)]++
	}
	seen.mu.Lock()
	var waits []time.Duration
	for name, at := range seen.approved {
		if created, ok := seen.created[name]; ok {
			waits = append(waits, at.Sub(created))
		}
	}
	r.Approvals, r.Reasons = len(seen.approved), seen.reasons
	seen.mu.Unlock()
	r.ToApproval = NewDist(waits)
	f.stop()
	t.Logf("%s, %d nodes: serving CSR to approval %s; all serving certificates stored %s after the start; requests %d%s; CPU %.2f s, peak RSS %d KiB",
		a.name, n, r.ToApproval.Millis(), secs(r.AllStored), len(evs), kinds(r.Requests), r.CPU, r.PeakRSSKiB)
	if r.Approvals != n || r.Reasons[a.reason] != n {
		t.Errorf("%s: %d serving CSRs approved, by reason %v; want %d, each %s", a.name, r.Approvals, r.Reasons, n, a.reason)
	}
	if len(waits) != n {
		t.Errorf("%s: creation and approval seen for %d serving CSRs, want %d", a.name, len(waits), n)
	}
	return r
}

// csrTimes are the serving CSRs' creation and approval as one watch saw
// them (the API's timestamps have whole seconds), and the approvals'
// reasons.
type csrTimes struct {
	mu                sync.Mutex
	created, approved map[string]time.Time
	reasons           map[string]int
}

// watch watches serving CSRs until ctx ends, closing started once the first
// watch is open; a watch that ends is opened again from the last resource
// version seen, so no change is missed.
func (s *csrTimes) watch(ctx context.Context, c *cluster, started chan<- struct{}) {
	rv := ""
	for first := true; ctx.Err() == nil; first = false {
		w, err := c.api().CertificatesV1().CertificateSigningRequests().Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true,
			FieldSelector: fields.OneTermEqualSelector("spec.signerName", certificatesv1.KubeletServingSignerName).String()})
		if first {
			close(started)
		}
		if err != nil {
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		for ev := range w.ResultChan() {
			if csr, ok := ev.Object.(*certificatesv1.CertificateSigningRequest); ok {
				rv = csr.ResourceVersion
				if ev.Type == watch.Added || ev.Type == watch.Modified {
					s.saw(ev.Type, csr)
				}
			}
		}
		w.Stop()
	}
}

// saw records a CSR's first sighting and its approval.
func (s *csrTimes) saw(typ watch.EventType, csr *certificatesv1.CertificateSigningRequest) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.created[csr.Name]; !ok && typ == watch.Added {
		s.created[csr.Name] = now
	}
	for _, cond := range csr.Status.Conditions {
		if _, ok := s.approved[csr.Name]; !ok && cond.Type == certificatesv1.CertificateApproved {
			s.approved[csr.Name] = now
			s.reasons[cond.Reason]++
		}
	}
}
