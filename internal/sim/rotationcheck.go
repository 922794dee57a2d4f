//go:build failpoints

package sim

import (
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/bootstrap"
	"github.com/certagent/certagent/trust"
)

// rotationStats are the CA rotation figures.
type rotationStats struct {
	Rotations, Phases, OfflinePhases int
	// Reachable: rotations the node followed phase by phase; OnNew: of
	// those, the ones that ended with the client certificate from the new
	// CA and the CA file holding the new CA only (all of them, or the seed
	// failed).
	Reachable, OnNew int
	// Paced: strandings by a phase the node had no chance to follow;
	// PacedTold: of those, the ones whose STATUS said to drop a bootstrap
	// kubeconfig by the time a person did.
	Paced, PacedTold int
	// ReissueCSRs: CSRs by signer in the settle time after phase 3, for
	// nodes that followed it.
	ReissueCSRs map[string]int
	Reissues    int // phases 3 followed
	// TrustWrites: versions of the trust files checked; Unfinished: rotations
	// whose phase 5 settled after the span.
	TrustWrites, Unfinished int
}

func (s *rotationStats) add(o rotationStats) {
	s.Rotations += o.Rotations
	s.Phases += o.Phases
	s.OfflinePhases += o.OfflinePhases
	s.Reachable += o.Reachable
	s.OnNew += o.OnNew
	s.Paced += o.Paced
	s.PacedTold += o.PacedTold
	s.Reissues += o.Reissues
	s.TrustWrites += o.TrustWrites
	s.Unfinished += o.Unfinished
	for k, n := range o.ReissueCSRs {
		if s.ReissueCSRs == nil {
			s.ReissueCSRs = map[string]int{}
		}
		s.ReissueCSRs[k] += n
	}
}

func (s rotationStats) String() string {
	return fmt.Sprintf("%d CA rotations (%d phases, %d of them with the node offline; %d unfinished at the end): %d followed by a reachable node, %d of those ended on the new CA; %d re-issues after phase 3 with %d client and %d serving CSRs; %d strandings by the operator's pace (%d told to drop a bootstrap kubeconfig by the rescue); %d trust file versions checked",
		s.Rotations, s.Phases, s.OfflinePhases, s.Unfinished, s.Reachable, s.OnNew, s.Reissues,
		s.ReissueCSRs[certificatesv1.KubeAPIServerClientKubeletSignerName], s.ReissueCSRs[certificatesv1.KubeletServingSignerName],
		s.Paced, s.PacedTold, s.TrustWrites)
}

// pacedCause is the prefix of a stranding's cause that the operator's
// pace explains.
const pacedCause = "operator's pace: "

// rotationCause prefixes cause if the node is being stranded at a phase
// it had no chance to follow.
func (w *World) rotationCause(cause string) string {
	if rot := w.rotation; rot != nil && w.now().Equal(rot.paceAt) {
		w.stats.Rotation.Paced++
		return pacedCause + cause
	}
	return cause
}

// rotationNote says where a rotation stands, for a failure's message.
func (w *World) rotationNote() string {
	rot := w.rotation
	if rot == nil || w.now().Before(rot.at[1]) {
		return ""
	}
	var b strings.Builder
	b.WriteString("; CA rotation:")
	for k := 1; k <= 5 && !w.now().Before(rot.at[k]); k++ {
		fmt.Fprintf(&b, " phase %d at %s (followed %v)", k, rot.at[k].Format(time.RFC3339), rot.followed[k])
	}
	return b.String()
}

// phaseSettled judges phase k once the node has had settleFor to follow
// it; start is the count of strandings at the phase.
func (w *World) phaseSettled(k, start int) {
	rot := w.rotation
	if rot.judged[k] {
		return // the next phase came first
	}
	rot.judged[k] = true
	rot.followed[k] = w.phaseFollowed(k)
	switch {
	case k == 3 && rot.followed[3]:
		w.judgeReissue()
	case k == 5:
		w.judgeRotation()
	}
}

// judgeReissue: one re-issue CSR per certificate after phase 3.
func (w *World) judgeReissue() {
	rot := w.rotation
	w.stats.Rotation.Reissues++
	a := w.api
	a.mu.Lock()
	defer a.mu.Unlock()
	for signer, times := range a.creates {
		n := 0
		for _, t := range times {
			if !t.Before(rot.at[3]) {
				n++
			}
		}
		if w.stats.Rotation.ReissueCSRs == nil {
			w.stats.Rotation.ReissueCSRs = map[string]int{}
		}
		w.stats.Rotation.ReissueCSRs[signer] += n
		want := 1
		if signer == certificatesv1.KubeletServingSignerName {
			want = 2 // a denial is retried
		}
		if signer == certificatesv1.KubeAPIServerClientKubeletSignerName && n != 1 || n > want {
			w.fail("seed %d: %d %s CSRs in the %s after phase 3 of the CA rotation (at %s), the node working throughout: want one re-issue", w.seed, n, signer, w.settleFor(), rot.at[3].Format(time.RFC3339))
		}
	}
}

// judgeRotation: a node that followed the rotation ends on the new CA.
func (w *World) judgeRotation() {
	rot := w.rotation
	if !rot.followed[1] || !rot.followed[3] && !rot.followed[4] || !rot.followed[5] {
		return
	}
	w.stats.Rotation.Reachable++
	pair, err := bootstrap.LoadCurrent(w.cfg.CertDir, bootstrap.Client)
	if err != nil || pair.Leaf.CheckSignatureFrom(rot.new.newest()) != nil {
		w.fail("seed %d: the node followed the CA rotation but its client certificate is not from the new CA after phase 5%s", w.seed, w.rotationNote())
		return
	}
	data, _ := os.ReadFile(w.cfg.TrustCAFile())
	b, err := trust.ParseBundle(data)
	if err != nil || len(b.CAs) != 1 || b.CAs[0].CheckSignatureFrom(rot.new.newest()) != nil {
		w.fail("seed %d: the node followed the CA rotation but its CA file %s holds %d CAs (%v), not the new CA alone%s", w.seed, w.cfg.TrustCAFile(), len(b.CAs), err, w.rotationNote())
		return
	}
	w.stats.Rotation.OnNew++
}

// checkTrustFiles: every version of the trust files certagent keeps holds
// at least one CA, and the API server's current serving CA.
func (w *World) checkTrustFiles() {
	if !w.cfg.Trust.Follow {
		return
	}
	w.checkBad()
	for i, p := range []string{w.cfg.TrustCAFile(), w.cfg.Trust.KubeletClientCAFile} {
		k := statKey(p)
		if p == "" || k == "-;" || w.trustChecked[i] == k {
			continue
		}
		w.trustChecked[i] = k
		w.stats.Rotation.TrustWrites++
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		b, err := trust.ParseBundle(data)
		if err != nil || len(b.CAs) == 0 {
			w.fail("seed %d: the trust file %s holds no CA (%v)", w.seed, p, err)
			return
		}
		w.api.mu.Lock()
		leaf := w.api.servingLeaf()
		w.api.mu.Unlock()
		roots := x509.NewCertPool()
		for _, c := range b.CAs {
			roots.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "sim", CurrentTime: w.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			w.fail("seed %d: the trust file %s (%s) does not verify the API server's current certificate (from %s): %v%s", w.seed, p, b.DescribeAll(), leaf.Issuer.CommonName, err, w.rotationNote())
		}
	}
}
