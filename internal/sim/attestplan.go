//go:build failpoints

package sim

import (
	"math/rand/v2"
	"time"
)

// The attestation nodes' configuration and their world: the service's
// faults, enrolments lost and restored, the node off past its
// certificate's expiry (attest.go has the service, attestcheck.go what is
// judged).

// setupAttestation configures a share of nodes with attestation (from a
// random stream of its own: the other draws of a seed stay as they were).
func (w *World) setupAttestation() {
	r := w.rngFor("attestation setup", 0)
	var mode attestMode
	switch p := r.Float64(); {
	case p < 0.12:
		mode = attestBefore
	case p < 0.16:
		mode = attestAfter
	case p < 0.3:
		mode = attestOnly
	default:
		return
	}
	w.attest = newAttestService(w, mode)
	w.attest.writeCA()
	w.svcActive = map[string]bool{}
	w.svcSince = w.now()
	w.stats.Attest.Nodes = 1
}

func (w *World) mode() attestMode {
	if w.attest == nil {
		return attestNone
	}
	return w.attest.mode
}

// planAttestation schedules the service's faults, enrolments lost and
// restored, and the node off past its certificate's expiry.
func (w *World) planAttestation(span time.Duration) {
	s := w.attest
	if s == nil {
		return
	}
	a := w.api
	set := func(f func()) func() { return func() { a.mu.Lock(); f(); a.mu.Unlock() } }
	w.poisson("attestation service down", 12, span, func(r *rand.Rand) {
		w.episode("attestation service down", r, 10*time.Second, 6*time.Hour,
			func() { set(func() { s.down = true })(); w.svcUnhealthy("down") },
			func() { set(func() { s.down = false })(); w.svcHealthy("down") })
	})
	w.poisson("attestation service busy", 6, span, func(r *rand.Rand) {
		w.episode("attestation service busy", r, time.Minute, time.Hour,
			func() { set(func() { s.busy = true })(); w.svcUnhealthy("busy") },
			func() { set(func() { s.busy = false })(); w.svcHealthy("busy") })
	})
	w.poisson("attestation service slow", 6, span, func(r *rand.Rand) {
		d := logUniform(r, time.Second, 3*time.Minute)
		w.episode("attestation service slow", r, time.Hour, 2*24*time.Hour,
			set(func() { s.slow = d }), set(func() { s.slow = 0 }))
	})
	w.poisson("attestation answers lost", 6, span, func(r *rand.Rand) {
		w.episode("attestation answers lost", r, time.Minute, time.Hour,
			func() { set(func() { s.lossy = true })(); w.svcUnhealthy("lossy") },
			func() { set(func() { s.lossy = false })(); w.svcHealthy("lossy") })
	})
	w.poisson("unenrolled", 2, span, func(r *rand.Rand) {
		// The enrolment deleted (a mistake, the node decommissioned and
		// brought back); someone enrols it again later.
		w.stats.Attest.Unenrolments++
		set(func() { s.enrolled = false })()
		w.after(logUniform(r, 10*time.Minute, 7*24*time.Hour), "re-enrolled", w.reenrol)
	})
	w.poisson("holiday", 2, span, func(r *rand.Rand) {
		if w.inst == nil {
			return
		}
		w.stats.Attest.Holidays++
		w.kill()
		w.after(w.pastExpiry(r), "start", w.start)
	})
	w.poisson("long suspend", 2, span, func(r *rand.Rand) {
		if w.inst == nil {
			return // a node that is off does not suspend
		}
		w.stats.Attest.LongSuspends++
		w.clk.suspended.Add(int64(w.pastExpiry(r)))
		w.healthySince, w.lastResume = w.now(), w.now()
		w.after(time.Duration(r.Float64()*float64(time.Minute)), "jump noticed", w.jumps.broadcast)
	})
}

// pastExpiry is how long a node stays off: past its client certificate's
// expiry by an hour to a month (four months at most).
func (w *World) pastExpiry(r *rand.Rand) time.Duration {
	d := logUniform(r, time.Hour, 30*24*time.Hour)
	if left := w.clientExpiry.Sub(w.now()); left > 0 {
		d += left
	}
	return min(d, 120*24*time.Hour)
}

// reenrol enrols the node's TPM again (with the cluster CA as it is now).
func (w *World) reenrol() {
	w.attest.writeCA()
	w.api.mu.Lock()
	w.attest.enrolled = true
	w.api.mu.Unlock()
}

// enrolmentsLost: the cluster was rebuilt, its enrolments with it.
func (w *World) enrolmentsLost(r *rand.Rand) {
	if w.attest == nil {
		return
	}
	w.api.mu.Lock()
	w.attest.enrolled = false
	w.api.mu.Unlock()
	w.after(logUniform(r, time.Minute, 2*24*time.Hour), "re-enrolled after the rebuild", w.reenrol)
}

// rescueNode is what a person does for a stranded node: enrol it again if
// it joins by attestation only, else drop a bootstrap kubeconfig.
func (w *World) rescueNode() {
	if w.attest != nil && w.attest.mode == attestOnly {
		w.reenrol()
		return
	}
	w.dropBootstrapKubeconfig()
}
