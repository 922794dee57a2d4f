//go:build failpoints

package sim

import (
	"bytes"
	"math/rand/v2"
	"os"
	"time"

	"github.com/certagent/certagent/bootstrap"
)

// Nodes configured with attestation, and what is judged about them:
//
//   - An enrolled node without a credential the API server accepts is not
//     stranded (it can attest), but it must have one again by the time it
//     and the service have been able to work for rescueBound (judgeAwait):
//     the same bound as a rescue, for the same reason (the agent may rightly
//     sleep rotate.PermanentBackoff after unknown_ek until the re-enrolment).
//     This covers a node whose certificate expired while it was off (a
//     holiday, a long suspend): it re-attests with nobody's help.
//   - A refusal (or the service unreachable) leaves kubelet.conf and the
//     client certificate as they were until a certificate issued since is
//     stored (checkRefusal).
//   - A retry sends the very CSR it sent before with the same key, and one
//     attestation creates one CSR (attest.go).

// awaitState is a spell without a credential while enrolled.
type awaitState struct {
	since      time.Time // zero if none
	expiredOff bool      // the certificate expired while the node was off
}

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

func (w *World) enrolled() bool {
	if w.attest == nil {
		return false
	}
	w.api.mu.Lock()
	defer w.api.mu.Unlock()
	return w.attest.enrolled
}

// newClientCertificate: the next attestation counts its CSRs afresh.
func (w *World) newClientCertificate() {
	if w.attest != nil {
		w.api.mu.Lock()
		w.attest.newAttestation()
		w.api.mu.Unlock()
	}
}

func (w *World) svcUnhealthy(cond string) { w.svcActive[cond] = true }

func (w *World) svcHealthy(cond string) {
	if w.svcActive[cond] {
		delete(w.svcActive, cond)
		w.svcSince = w.now()
		w.awaitWhenHealthy()
	}
}

// canAttestSince is when the node and the service last became able to
// work; ok is false if they cannot now.
func (w *World) canAttestSince() (time.Time, bool) {
	if len(w.active) > 0 || len(w.svcActive) > 0 {
		return time.Time{}, false
	}
	return laterOf(w.healthySince, w.svcSince), true
}

// watchAwait follows spells without a credential while enrolled.
func (w *World) watchAwait(credOK bool, credWhy string, attestOK bool) {
	awaiting := !credOK && attestOK
	st := &w.stats.Attest
	switch {
	case awaiting && w.await.since.IsZero():
		off := credWhy == "client certificate expired" && (w.down || w.now().Sub(w.lastResume) < time.Second)
		w.await = awaitState{since: w.now(), expiredOff: off}
		st.Awaits++
		if off {
			st.ExpiredOff++
		}
		w.awaitWhenHealthy()
	case !awaiting && !w.await.since.IsZero():
		if credOK {
			st.AwaitsRecovered++
			if w.await.expiredOff {
				st.ExpiredOffOK++
			}
			if since, ok := w.canAttestSince(); ok {
				st.LongestAwait = max(st.LongestAwait, w.now().Sub(laterOf(since, w.await.since)))
			}
		}
		w.await = awaitState{}
	}
}

// awaitWhenHealthy has the spell in progress judged rescueBound after the
// node and the service can work.
func (w *World) awaitWhenHealthy() {
	if since := w.await.since; !since.IsZero() {
		if _, ok := w.canAttestSince(); ok {
			w.after(rescueBound, "attestation deadline", func() { w.judgeAwait(since) })
		}
	}
}

// judgeAwait fails if the spell that began at since is not over although
// the node and the service could work for rescueBound.
func (w *World) judgeAwait(since time.Time) {
	w.watchStranding()
	if !w.await.since.Equal(since) {
		return // over
	}
	can, ok := w.canAttestSince()
	if !ok {
		return // judged again once they can
	}
	from := laterOf(since, can)
	if w.now().Sub(from) < rescueBound {
		w.at(from.Add(rescueBound), "attestation deadline", func() { w.judgeAwait(since) })
		return
	}
	_, credWhy := w.credential()
	w.fail("seed %d: the node (%s), enrolled, has had no credential the API server accepts since %s (kubelet.conf: %s) although it and the attestation service could work for the last %s (since %s; bound %s)",
		w.seed, w.mode(), since.Format(time.RFC3339), credWhy, w.now().Sub(from).Round(time.Second), from.Format(time.RFC3339), rescueBound)
}

// checkRefusal: since the service's last refusal, kubelet.conf and the
// client certificate are untouched unless a certificate issued since is
// stored.
func (w *World) checkRefusal() {
	s := w.attest
	if s == nil {
		return
	}
	w.api.mu.Lock()
	snap := s.refusal
	w.api.mu.Unlock()
	if snap == nil {
		return
	}
	kc, _ := os.ReadFile(w.cfg.Kubeconfig)
	cert, _ := os.ReadFile(bootstrap.CurrentPath(w.cfg.CertDir, bootstrap.Client))
	if bytes.Equal(kc, snap.kubeconfig) && bytes.Equal(cert, snap.certificate) {
		return
	}
	if certs, err := bootstrap.ParseCertificates(cert); err == nil && !bytes.Equal(cert, snap.certificate) &&
		!certs[0].NotBefore.Add(5*time.Minute).Before(snap.at) {
		w.forgetRefusal() // a certificate issued since (sign backdates 5 minutes)
		return
	}
	what := "kubelet.conf"
	if !bytes.Equal(cert, snap.certificate) {
		what = "the client certificate"
	}
	w.fail("seed %d: %s changed after the attestation service refused the node (%s at %s) although no certificate was issued since: a refusal must leave the node's files alone",
		w.seed, what, snap.why, snap.at.Format(time.RFC3339))
}

func (w *World) forgetRefusal() {
	if w.attest != nil {
		w.api.mu.Lock()
		w.attest.refusal = nil
		w.api.mu.Unlock()
	}
}
