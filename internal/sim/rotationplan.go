//go:build failpoints

package sim

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"

	"github.com/certagent/certagent/trust"
)

// RotateAll gives every seed a CA rotation (the dedicated scenario);
// otherwise rotationShare of them have one (few: a rotating seed costs about
// twice a plain one, and make sim-rotation runs them all).
var RotateAll bool

const rotationShare = 0.1

// A rotation is the five phases of docs/ca-rotation.md, each as an operator
// does it, at random times with gaps of minutes to weeks:
//
//  1. the new CA is added to the API server's --client-ca-file and to the
//     published kube-apiserver-serving bundle (old + new);
//  2. the API server serves a certificate from the new CA;
//  3. the kubelet signers issue from the new CA, and their published
//     bundles name old + new;
//  4. the API server's kubelet-client certificate moves (nothing the
//     simulated node sees: the simulation has no kubelet);
//  5. the old CA is removed everywhere: --client-ca-file and every bundle.
//
// Sometimes the node is cut off from the API server through a phase or
// two. The node follows a phase if it could work for settleFor after it
// (phaseFollowed). Judged (rotationcheck.go): a node that followed phase 1
// is not stranded by phase 2, one that followed phase 3 or 4 is not
// stranded by phase 5; a node stranded by a phase it had no chance to
// follow is "stranded by the operator's pace", counted apart and rescued
// as any stranded node; one that followed every phase ends with its client
// certificate from the new CA and only the new CA in its CA file, after one
// re-issue CSR per certificate.
type rotation struct {
	at       [6]time.Time // phases 1..5; [0] unused
	followed [6]bool      // the node could work for settleFor after phase k, before phase k+1
	judged   [6]bool
	old, new *ca
	oldPEM   []byte // the old CA as trusted when the rotation began
	paceAt   time.Time
	offline  int // phases the node was cut off through
}

// settleFor is how long a node needs after a phase to follow it: the
// re-issue's spread, the follower's longest retry (5 minutes, drawn up to
// 1.5 times), a CSR's decision, and margin.
func (w *World) settleFor() time.Duration {
	return w.cfg.ReissueSpread() + 15*time.Minute
}

// planRotation decides whether this seed has a rotation and schedules it.
func (w *World) planRotation(span time.Duration) {
	r := w.rngFor("rotation", 0)
	if p := r.Float64(); !RotateAll && p >= rotationShare || w.attest != nil {
		return // nodes that join by attestation: not yet (the report's "left")
	}
	rot := &rotation{}
	w.rotation = rot
	w.followTrust()
	w.stats.Rotation.Rotations++
	t := w.now().Add(time.Duration((0.05 + 0.4*r.Float64()) * float64(span)))
	for k := 1; k <= 5; k++ {
		rot.at[k] = t
		k := k
		w.at(t, fmt.Sprintf("CA rotation phase %d", k), func() { w.rotationPhase(k) })
		t = t.Add(logUniform(r, time.Minute, 21*24*time.Hour))
	}
	for r.Float64() < 0.4 {
		w.planOffline(r, rot)
	}
	w.planBadBundles(span)
}

// followTrust turns trust.follow on, as an operator does on every node
// before a rotation. Only the seeds with a rotation follow: the follower's
// watch and its files cost a seed about twice its time, and without a
// rotation there is nothing for it to follow (the sim's API server
// publishes one bundle that never changes).
func (w *World) followTrust() {
	c := w.file()
	c.Trust.Follow = true
	c.Trust.KubeletClientCAFile = filepath.Join(c.CertDir, "kubelet-client-ca.crt")
	if err := c.Validate(); err != nil {
		w.fail("seed %d: trust.follow: the configuration is invalid: %v", w.seed, err)
		return
	}
	w.setFile(c)
	w.cfg = c
}

// planOffline cuts the node off from the API server from before a phase to
// after it or the next.
func (w *World) planOffline(r *rand.Rand, rot *rotation) {
	k := 1 + r.IntN(5)
	j := min(5, k+r.IntN(2))
	from := rot.at[k].Add(-logUniform(r, time.Minute, 24*time.Hour))
	to := rot.at[j].Add(logUniform(r, time.Minute, 2*24*time.Hour))
	rot.offline += j - k + 1
	w.stats.Rotation.OfflinePhases += j - k + 1
	a := w.api
	w.at(from, "node offline", func() {
		a.mu.Lock()
		a.rot.offline++
		a.closeAllWatches()
		a.mu.Unlock()
		w.setUnhealthy("offline")
	})
	w.at(to, "node online", func() {
		a.mu.Lock()
		a.rot.offline--
		n := a.rot.offline
		a.mu.Unlock()
		if n == 0 {
			w.setHealthy("offline")
		}
	})
}

// rotationPhase performs phase k.
func (w *World) rotationPhase(k int) {
	rot := w.rotation
	if k > 1 && !rot.judged[k-1] {
		rot.judged[k-1] = true // the next phase came before the node could follow
	}
	w.stats.Rotation.Phases++
	a := w.api
	a.mu.Lock()
	both := func() []byte { return append(bytes.Clone(rot.oldPEM), rot.new.pem...) }
	switch k {
	case 1:
		rot.old, rot.oldPEM = a.cluster, bytes.Clone(a.cluster.pem)
		rot.new = newNamedCA("sim-cluster-ca-2", w.now(), 10*365*24*time.Hour)
		a.rot.clients = []*ca{rot.old, rot.new}
		a.rot.gen++
		a.publish(trust.SignerAPIServerServing, both())
	case 2:
		a.rot.serving = rot.new
	case 3:
		a.cluster = rot.new
		a.publish(trust.SignerKubeletClient, both())
		a.publish(trust.SignerKubeletServing, both())
	case 5:
		a.rot.clients = []*ca{rot.new}
		a.rot.gen++
		for _, s := range []string{trust.SignerAPIServerServing, trust.SignerKubeletClient, trust.SignerKubeletServing} {
			a.publish(s, rot.new.pem)
		}
	}
	a.mu.Unlock()
	switch k {
	case 2:
		w.pacedIf(!rot.followed[1])
	case 5:
		w.pacedIf(!rot.followed[3] && !rot.followed[4])
	}
	start := w.stats.Strandings
	w.after(w.settleFor(), fmt.Sprintf("CA rotation phase %d settled", k), func() { w.phaseSettled(k, start) })
}

// pacedIf marks this instant as one whose stranding is the operator's pace.
func (w *World) pacedIf(paced bool) {
	if paced {
		w.rotation.paceAt = w.now()
	}
}

// phaseFollowed reports whether the node could work ever since phase k.
func (w *World) phaseFollowed(k int) bool {
	return len(w.active) == 0 && !w.healthySince.After(w.rotation.at[k])
}

// finishRotation counts a rotation the span ended in the middle of.
func (w *World) finishRotation() {
	if rot := w.rotation; rot != nil && !rot.judged[5] {
		w.stats.Rotation.Unfinished++
	}
}
