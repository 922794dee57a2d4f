//go:build failpoints

package sim

import (
	"bytes"
	"fmt"
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

// attestStats are the attestation figures of a seed.
type attestStats struct {
	Nodes                       int // seeds with attestation configured
	Calls, Refused, Unreachable int
	Created, Adopted            int // CSRs the service created; answers with one it had made
	MostPerAttestation          int // most CSRs created within one attestation
	Attestations                int // attestations that created a CSR
	Awaits, AwaitsRecovered     int // spells without a credential while enrolled; over by attestation
	ExpiredOff, ExpiredOffOK    int // of them: the certificate expired while the node was off
	LongestAwait                time.Duration
	Holidays, LongSuspends      int
	Lost                        int // answers lost after the CSR was made
	Unenrolments                int
}

func (s *attestStats) add(o attestStats) {
	s.Nodes += o.Nodes
	s.Calls += o.Calls
	s.Refused += o.Refused
	s.Unreachable += o.Unreachable
	s.Created += o.Created
	s.Adopted += o.Adopted
	s.MostPerAttestation = max(s.MostPerAttestation, o.MostPerAttestation)
	s.Attestations += o.Attestations
	s.Awaits += o.Awaits
	s.AwaitsRecovered += o.AwaitsRecovered
	s.ExpiredOff += o.ExpiredOff
	s.ExpiredOffOK += o.ExpiredOffOK
	s.LongestAwait = max(s.LongestAwait, o.LongestAwait)
	s.Holidays += o.Holidays
	s.LongSuspends += o.LongSuspends
	s.Unenrolments += o.Unenrolments
	s.Lost += o.Lost
}

func (s attestStats) String(nodeYears float64) string {
	if s.Nodes == 0 {
		return "no attestation nodes"
	}
	return fmt.Sprintf("%d attestation nodes: %d exchanges (%d refused, %d unreachable), %.1f attestation CSRs per attestation node-year (%d answers lost after the CSR was made, %d adopted on a retry), at most %d CSRs in one attestation; %d spells without a credential while enrolled, %d over by attestation (%d of %d after the certificate expired while off), the longest %s once the node could work; %d holidays, %d long suspends, %d unenrolments",
		s.Nodes, s.Calls, s.Refused, s.Unreachable, float64(s.Created)/nodeYears, s.Lost, s.Adopted, s.MostPerAttestation,
		s.Awaits, s.AwaitsRecovered, s.ExpiredOffOK, s.ExpiredOff, s.LongestAwait.Round(time.Second), s.Holidays, s.LongSuspends, s.Unenrolments)
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
