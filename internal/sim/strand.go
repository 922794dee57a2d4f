//go:build failpoints

package sim

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// A stranded node has neither a credential the API server accepts nor a
// bootstrap kubeconfig to start over with: kubelet.conf is missing, expired,
// of another cluster or refused, and the bootstrap kubeconfig is absent or
// holds a token the API server no longer honours. Only a person gets it out,
// by dropping a fresh bootstrap kubeconfig: a rescue. The simulation looks
// after every event (watchStranding), counts strandings and rescues, and
// judges them:
//
//   - A stranding must be the world's doing. It is legitimate if it began
//     while the node could not work (healthyFor is 0: an outage, the agent
//     down, a suspend, a scenario that took its credentials away), if the
//     client certificate expired before the node had been able to renew for
//     expiryGrace, or if the bootstrap token lapsed before the node had been
//     able to use it for rescueBound. Any other stranding is a violation,
//     and so is one that follows the agent's deletion of the bootstrap
//     kubeconfig while kubelet.conf was not accepted, whatever else the
//     world did meanwhile.
//   - The agent deletes the bootstrap kubeconfig only while the API server
//     accepts kubelet.conf and after a request made with kubelet.conf's
//     certificate succeeded: its proof (bootstrapRemoved, judged at the
//     moment of the deletion).
//   - A rescue ends with kubelet.conf accepted and the bootstrap kubeconfig
//     deleted by the time the node has been able to work for rescueBound
//     without interruption (judgeRescue); a rescue whose token lapses first
//     strands the node again, which is judged as above.

const (
	// expiryGrace: a client certificate may expire only if the node could
	// not renew for this long before. A renewal takes seconds; the back-off
	// after a transient failure is 2.4 minutes at most, and CapToExpiry
	// keeps longer back-offs from carrying past NotAfter.
	expiryGrace = 10 * time.Minute
	// rescueBound: once the node can work, a rescue must be over within
	// this. The longest the agent may rightly sleep once the cause of a
	// failure is gone is rotate.PermanentBackoff.Longest(), its one-hour
	// cap's highest draw, 90 minutes (after its CSR was denied, or the API
	// server refused the new kubelet.conf); the bootstrap itself takes
	// seconds here (client CSRs are decided within 5 s). Two hours leave half
	// an hour for that and still fail an agent that does not act on the
	// bootstrap kubeconfig. TestSim refuses to run if the back-off outgrows
	// it.
	rescueBound = 2 * time.Hour
)

// strandState is what watchStranding saw last.
type strandState struct {
	looked                   bool
	credOK, bootOK, attestOK bool      // attestOK: enrolled with the attestation service
	since                    time.Time // when the node was found stranded; zero if it is not
	cause                    string
}

// rescue is a bootstrap kubeconfig dropped onto a stranded node, until the
// node recovers or is stranded again.
type rescue struct {
	at    time.Time // the drop
	since time.Time // the node was stranded since
	cause string    // why it was
}

// credential reports whether the API server accepts kubelet.conf as this
// node now, whatever an outage or throttling would do to a request; if not,
// why.
func (w *World) credential() (bool, string) {
	key := statKey(w.cfg.Kubeconfig)
	if key == "-;" {
		return false, "no kubelet.conf"
	}
	rc, err := w.kubeconfig(key)
	if err != nil {
		return false, "kubelet.conf does not load"
	}
	a := w.api
	a.mu.Lock()
	defer a.mu.Unlock()
	who := a.authenticate(rc)
	switch {
	case who.err != nil:
		return false, who.why
	case who.user != "system:node:"+w.cfg.NodeName:
		return false, "kubelet.conf authenticates as " + who.user
	}
	return true, ""
}

// bootstrapUsable reports whether the bootstrap kubeconfig is on disk with a
// token the API server honours now; if not, why. The agent never writes one:
// the file there is the last one dropped.
func (w *World) bootstrapUsable() (bool, string) {
	if _, err := os.Lstat(w.cfg.BootstrapKubeconfig); err != nil {
		return false, "no bootstrap kubeconfig"
	}
	a := w.api
	a.mu.Lock()
	exp, ok := a.tokens[w.bootToken]
	a.mu.Unlock()
	switch {
	case !ok:
		return false, "bootstrap token unknown"
	case !w.now().Before(exp):
		return false, "bootstrap token expired"
	}
	return true, ""
}

// watchStranding looks at the node's credentials: a rescue that is over, a
// stranding that begins (judged) or ends.
func (w *World) watchStranding() {
	credOK, credWhy := w.credential()
	bootOK, bootWhy := w.bootstrapUsable()
	attestOK := w.enrolled()
	prev := w.strand
	w.strand.looked, w.strand.credOK, w.strand.bootOK, w.strand.attestOK = true, credOK, bootOK, attestOK
	if r := w.rescue; r != nil && credOK && bootWhy == "no bootstrap kubeconfig" {
		w.recovered(r)
	}
	stranded := !credOK && !bootOK && !attestOK
	switch {
	case stranded && prev.since.IsZero():
		cause := credWhy
		if prev.looked && prev.attestOK && !prev.credOK {
			cause = "not enrolled" // what changed is the enrolment: a person's doing
		} else if prev.looked && prev.bootOK && !prev.credOK {
			cause = bootWhy // what changed is the bootstrap kubeconfig
			w.failMu.Lock()
			accepted := w.removedAccepted
			w.failMu.Unlock()
			switch {
			case bootWhy != "no bootstrap kubeconfig":
			case accepted:
				// kubelet.conf was accepted when the agent deleted it:
				// what stranded the node is what happened to kubelet.conf
				// since.
				cause = credWhy
			default:
				cause = "bootstrap kubeconfig deleted by the agent" // the simulation never deletes it
			}
		}
		w.stranded(cause, credWhy)
	case !stranded && !prev.since.IsZero():
		w.unstranded()
	}
	if w.attest != nil {
		w.watchAwait(credOK, credWhy, attestOK)
	}
}

// stranded records and judges a stranding that begins now.
func (w *World) stranded(cause, credWhy string) {
	now := w.now()
	cause = w.rotationCause(cause)
	w.strand.since, w.strand.cause = now, cause
	w.stats.Strandings++
	if w.stats.StrandCauses == nil {
		w.stats.StrandCauses = map[string]int{}
	}
	w.stats.StrandCauses[cause]++
	if w.rescue != nil {
		w.stats.Restranded++ // before it recovered: its token lapsed, or its cluster went
		w.rescue = nil
	}
	h := w.healthyFor()
	why := fmt.Sprintf("seed %d: the node was stranded at %s (%s; kubelet.conf: %s) although it could work for the last %s (since %s)%s",
		w.seed, now.Format(time.RFC3339), cause, credWhy, h.Round(time.Second), w.healthySince.Format(time.RFC3339), w.rotationNote())
	switch {
	case cause == "bootstrap kubeconfig deleted by the agent":
		w.failMu.Lock()
		at := w.removedAt
		w.failMu.Unlock()
		w.fail("seed %d: the node was stranded at %s: the agent deleted the bootstrap kubeconfig at %s while the API server did not accept kubelet.conf (%s)",
			w.seed, now.Format(time.RFC3339), at.Format(time.RFC3339), credWhy)
	case h == 0, cause == "not enrolled", strings.HasPrefix(cause, pacedCause): // the world did it
	case cause == "client certificate expired":
		if h >= expiryGrace {
			w.fail("%s: it should have renewed", why)
		}
	case cause == "bootstrap token expired":
		if h >= rescueBound {
			w.fail("%s: it should have used the bootstrap kubeconfig before its token lapsed", why)
		}
	default:
		w.fail("%s: nothing in the simulated world explains it", why)
	}
	w.setUnhealthy("stranded")
	if w.dropsDue == 0 {
		w.dropLater(logUniform(w.rngFor("rescue", w.stats.Strandings), 10*time.Minute, 24*time.Hour), "rescue", true, nil)
	}
}

// unstranded records the end of a stranding.
func (w *World) unstranded() {
	w.stats.LongestStranded = max(w.stats.LongestStranded, w.now().Sub(w.strand.since))
	w.strand.since, w.strand.cause = time.Time{}, ""
	w.setHealthy("stranded")
}

// dropLater has a person drop a fresh bootstrap kubeconfig after d (only if
// the node is stranded then, with onlyIfStranded), then runs then. A drop
// onto a stranded node is a rescue.
func (w *World) dropLater(d time.Duration, why string, onlyIfStranded bool, then func()) {
	w.dropsDue++
	w.after(d, "bootstrap kubeconfig dropped ("+why+")", func() {
		w.dropsDue--
		w.watchStranding() // the agent may have acted since the last look
		stranded := !w.strand.since.IsZero()
		if stranded || !onlyIfStranded {
			w.rescueNode()
		}
		if stranded && strings.HasPrefix(w.strand.cause, pacedCause) && strings.Contains(w.status(), "drop a bootstrap kubeconfig") {
			w.stats.Rotation.PacedTold++
		}
		if stranded {
			r := &rescue{at: w.now(), since: w.strand.since, cause: w.strand.cause}
			w.rescue = r
			w.stats.Rescues++
			w.after(rescueBound, "rescue deadline", func() { w.judgeRescue(r) })
		}
		if then != nil {
			then()
		}
	})
}

// recovered records the end of rescue r: kubelet.conf accepted, the
// bootstrap kubeconfig deleted. It ended when the agent deleted the
// bootstrap kubeconfig (bootstrapRemoved saw kubelet.conf accepted then),
// which may have been before this look.
func (w *World) recovered(r *rescue) {
	now := w.now()
	w.failMu.Lock()
	if w.removedAt.After(r.at) {
		now = w.removedAt
	}
	w.failMu.Unlock()
	w.stats.Recovered++
	w.stats.Recoveries = append(w.stats.Recoveries, now.Sub(r.at))
	if len(w.active) == 0 {
		w.stats.LongestWait = max(w.stats.LongestWait, now.Sub(laterOf(r.at, w.healthySince)))
	}
	w.rescue = nil
}

// judgeRescue fails if rescue r is still not over although the node could
// work for rescueBound since the drop; if it could not, it looks again
// when it will have (setHealthy also calls it once the node can work again).
func (w *World) judgeRescue(r *rescue) {
	w.watchStranding() // the agent may have finished since the last look
	if w.rescue != r || len(w.active) > 0 {
		return // over, or the node cannot work now
	}
	from := laterOf(r.at, w.healthySince)
	if w.now().Sub(from) < rescueBound {
		w.at(from.Add(rescueBound), "rescue deadline", func() { w.judgeRescue(r) })
		return
	}
	_, credWhy := w.credential()
	if credWhy == "" {
		credWhy = "accepted"
	}
	_, bootWhy := w.bootstrapUsable()
	if bootWhy == "" {
		bootWhy = "present, its token valid"
	}
	w.fail("seed %d: the node stranded at %s (%s) was given a bootstrap kubeconfig at %s and has not recovered although it could work for the last %s (since %s; bound %s): kubelet.conf %s; bootstrap kubeconfig: %s",
		w.seed, r.since.Format(time.RFC3339), r.cause, r.at.Format(time.RFC3339), w.now().Sub(from).Round(time.Second), from.Format(time.RFC3339), rescueBound, credWhy, bootWhy)
}

// rescueWhenHealthy has the rescue in progress judged rescueBound after
// the node can work again.
func (w *World) rescueWhenHealthy() {
	if r := w.rescue; r != nil && len(w.active) == 0 {
		w.after(rescueBound, "rescue deadline", func() { w.judgeRescue(r) })
	}
}

// finishStranding judges and counts what is left at the end of the span.
func (w *World) finishStranding() {
	w.watchStranding()
	if r := w.rescue; r != nil {
		w.judgeRescue(r)
	}
	if !w.strand.since.IsZero() {
		w.stats.StrandedAtEnd++
		w.stats.LongestStranded = max(w.stats.LongestStranded, w.now().Sub(w.strand.since))
	}
	w.api.mu.Lock()
	w.stats.BootProofsFailed = len(w.api.proofFailed)
	w.api.mu.Unlock()
}

// bootstrapRemoved judges the agent's deletion of the bootstrap kubeconfig
// at the moment it happens (the agent's OnBootstrapRemoved): the API server
// must accept kubelet.conf now, and a request made with its certificate must
// have succeeded. Otherwise the agent may have stranded its node.
func (w *World) bootstrapRemoved(kubeconfig string) {
	rc, err := w.kubeconfig(statKey(kubeconfig))
	if err != nil {
		w.fail("seed %d: the agent deleted the bootstrap kubeconfig while kubelet.conf does not load: %v", w.seed, err)
		return
	}
	a := w.api
	a.mu.Lock()
	who := a.authenticate(rc)
	proven := who.leaf != nil && a.succeeded[string(who.leaf.Raw)]
	a.mu.Unlock()
	w.failMu.Lock()
	w.removedAt, w.removedAccepted = w.now(), who.err == nil && who.user == "system:node:"+w.cfg.NodeName
	w.failMu.Unlock()
	switch {
	case who.err != nil:
		w.fail("seed %d: the agent deleted the bootstrap kubeconfig while the API server refuses kubelet.conf (%s): the node is stranded until a person drops another", w.seed, who.why)
	case who.user != "system:node:"+w.cfg.NodeName:
		w.fail("seed %d: the agent deleted the bootstrap kubeconfig while kubelet.conf authenticates as %s", w.seed, who.user)
	case !proven:
		w.fail("seed %d: the agent deleted the bootstrap kubeconfig before any request made with kubelet.conf's certificate (serial %s, issued %s) had succeeded: its proof failed or never ran",
			w.seed, who.leaf.SerialNumber, who.leaf.NotBefore.Add(5*time.Minute).Format(time.RFC3339))
	}
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// add sums another seed's stranding figures into s.
func (s *Stats) add(o Stats) {
	s.Strandings += o.Strandings
	for c, n := range o.StrandCauses {
		if s.StrandCauses == nil {
			s.StrandCauses = map[string]int{}
		}
		s.StrandCauses[c] += n
	}
	s.StrandedAtEnd += o.StrandedAtEnd
	s.LongestStranded = max(s.LongestStranded, o.LongestStranded)
	s.Rescues += o.Rescues
	s.Recovered += o.Recovered
	s.Restranded += o.Restranded
	s.Recoveries = append(s.Recoveries, o.Recoveries...)
	s.LongestWait = max(s.LongestWait, o.LongestWait)
	s.BootProofsFailed += o.BootProofsFailed
	s.Attest.add(o.Attest)
	s.Rotation.add(o.Rotation)
	s.Bad.Published += o.Bad.Published
	s.Bad.Judged += o.Bad.Judged
	s.Bad.Refused += o.Bad.Refused
}

// strandings is the report's part about strandings and rescues.
func (s Stats) strandings() string {
	causes := make([]string, 0, len(s.StrandCauses))
	for c := range s.StrandCauses {
		causes = append(causes, c)
	}
	slices.SortFunc(causes, func(a, b string) int {
		return cmp.Or(cmp.Compare(s.StrandCauses[b], s.StrandCauses[a]), cmp.Compare(a, b))
	})
	for i, c := range causes {
		causes[i] = fmt.Sprintf("%d %s", s.StrandCauses[c], c)
	}
	rec := slices.Sorted(slices.Values(s.Recoveries))
	at := func(q float64) time.Duration {
		if len(rec) == 0 {
			return 0
		}
		return rec[min(len(rec)-1, int(q*float64(len(rec))))].Round(time.Second)
	}
	strandings := fmt.Sprintf("%d strandings", s.Strandings)
	if s.Strandings > 0 {
		strandings += fmt.Sprintf(" (%s; the longest %s)", strings.Join(causes, ", "), s.LongestStranded.Round(time.Second))
	}
	rescues := fmt.Sprintf("%d rescues: %d recovered", s.Rescues, s.Recovered)
	if s.Recovered > 0 {
		rescues += fmt.Sprintf(" (from the drop: median %s, p90 %s, max %s; at most %s once the node could work, bound %s)",
			at(0.5), at(0.9), at(1), s.LongestWait.Round(time.Second), rescueBound)
	}
	return fmt.Sprintf("%s, %d still stranded at the end; %s, %d stranded again first; %d proofs of kubelet.conf failed with a bootstrap kubeconfig waiting on them (kept)",
		strandings, s.StrandedAtEnd, rescues, s.Restranded, s.BootProofsFailed)
}
