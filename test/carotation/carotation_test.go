package carotation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/test/kubelettest"
)

// What the test expects of certagent's node side, in one place.
const (
	// nodeSideEnv set to "off" logs the node side's failures instead of
	// failing on them: the control plane's phases and the kubelet's
	// liveness are still checked.
	nodeSideEnv = "CERTAGENT_CAROT_NODE"
	// phaseGapEnv overrides phaseGap (a Go duration).
	phaseGapEnv = "CERTAGENT_CAROT_PHASE_GAP"
	// restartAfterServingEnv set to "1" also restarts the API server right
	// after SwitchServing: the kubelet then reconnects before client-go
	// re-read kubelet.conf's CA file (every 5 minutes), refuses the new
	// serving certificate and leaves its Lease unrenewed until that re-read
	// (3m53s measured). It shows why an operator must wait 5 minutes after
	// the nodes trust both CAs before anything makes kubelets reconnect.
	restartAfterServingEnv = "CERTAGENT_CAROT_RESTART_AFTER_SERVING"
	// caInfoMetric is the metric line naming the CA a certificate
	// ("client", "server") chains to: its CommonName and the first 16 hex
	// digits of the SHA-256 of its DER.
	caInfoMetric = `certagent_certificate_ca_info{certificate=%q,ca=%q,ca_sha256=%q} 1`
	// reissueSpread is the node's trust.reissueSpread.
	reissueSpread = 10 * time.Second
	// nodeTimeout bounds how long the node may take to follow a phase
	// (after SwitchSigners: reissueSpread more).
	nodeTimeout = 2 * time.Minute
	// kubeletClientReread bounds how long the kubelet takes to use a new
	// client certificate file: client-go re-reads it every 5 minutes.
	kubeletClientReread = 5*time.Minute + 30*time.Second
	// maxLeaseGap is the Lease's duration: a longer gap marks the node
	// NotReady.
	maxLeaseGap = 40 * time.Second
)

// phaseGap is how long the test watches between phases (and before the
// first), after the node followed the phase.
var phaseGap = 30 * time.Second

// TestCARotation rotates the cluster CA in five phases under a node where
// certagent (trust.follow) keeps the real kubelet's files: the kubelet stays
// up (same PID, Lease renewed, logs/exec/node proxy through the API server
// after every phase, no failed TLS dial to it; before 1.36, which reads
// its CA files only at start, restarted by certagent's postTrust hook only
// in the phases that change them, see restarts_test.go), certagent never restarts,
// and the node follows each phase: both CAs trusted after AddCA, both
// certificates re-issued from the new CA within reissueSpread after
// SwitchSigners, and after RemoveOldCA every certificate and trust file on
// the new CA alone.
func TestCARotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if d, err := time.ParseDuration(os.Getenv(phaseGapEnv)); err == nil {
		phaseGap = d
	}
	h := kubelettest.NewHost(ctx, t)
	t.Logf("control plane %s, kubelet %s", cp.Version(), h.KubeletBin)
	n := newNode(ctx, t, "carotation-node")
	go kubelettest.ApproveServing(ctx, cp, n.name)
	ns := kubelettest.NewNotifySocket(t)
	agent := n.startDaemon(t, ns)
	ns.WaitFor(t, "READY=1", func(m string) bool { return m == "READY=1" }, time.Minute)
	r := &rotation{t: t, n: n, agent: agent, strict: os.Getenv(nodeSideEnv) != "off"}
	r.phase = "0 before the rotation"
	r.waitForKubeletFiles(ctx)
	if restartsKubelet() {
		r.serveRestarts(ctx)
	}

	r.k = h.StartKubelet(t, cp, n.name, n.dir, n.kubeconf, n.certDir, n.clientCA, cp.CACertPEM)
	r.pid = r.k.Cmd.Process.Pid
	ready, err := r.k.WaitReady(ctx, h.NodeIP)
	if err != nil {
		r.fatal("%v", err)
	}
	w := r.k.Watch
	w.Kubectl = kubectlBin
	w.Pod, _ = kubelettest.StartPod(ctx, t, cp, n.name)
	r.metricsAddr = kubelettest.MetricsAddr(t, agent.out.String)
	t.Logf("node %s Ready %s after the kubelet started; rotating with %s between phases", n.name, ready.Round(time.Millisecond), phaseGap)

	r.watch(ctx, phaseGap, nil)
	for _, p := range r.phases() {
		start := time.Now()
		r.phase = p.name
		if err := p.do(ctx); err != nil {
			r.fatal("phase %s: %v", p.name, err)
		}
		r.took = append(r.took, p.name+" "+time.Since(start).Round(time.Millisecond).String())
		if p.name == phaseSwitchKubeletClient {
			r.apiServerTakesUpItsClient(ctx)
		}
		w.ThroughAPIServer(ctx)
		if p.follow != nil {
			p.follow(ctx)
		}
		r.watch(ctx, phaseGap, nil)
	}
	r.report()
}

// The phases that change the node's trust files, and the one that
// re-issues its certificates.
const (
	phaseAddCA         = "1 AddCA"
	phaseSwitchSigners = "3 SwitchSigners"
	// phaseSwitchKubeletClient changes nothing on the node: the API server
	// calls kubelets with a client certificate of the new CA.
	phaseSwitchKubeletClient = "4 SwitchKubeletClient"
	phaseRemoveOldCA         = "5 RemoveOldCA"
)

// phase is one step of the rotation and what the node must do after it.
type phase struct {
	name   string
	do     func(context.Context) error
	follow func(context.Context)
}

func (r *rotation) phases() []phase {
	phases := []phase{
		{phaseAddCA, r.addCA, r.followAddCA},
		{"2 SwitchServing", cp.SwitchServing, nil},
		{phaseSwitchSigners, cp.SwitchSigners, r.followSwitchSigners},
		{phaseSwitchKubeletClient, cp.SwitchKubeletClient, nil},
		{phaseRemoveOldCA, cp.RemoveOldCA, r.followRemoveOldCA},
		{"API server restart", restartAPIServer, nil},
	}
	if os.Getenv(restartAfterServingEnv) == "1" {
		phases = slices.Insert(phases, 2, phase{"API server restart after SwitchServing", restartAPIServer, nil})
	}
	return phases
}

// apiServerTakesUpItsClient makes requests to the kubelet through the API
// server, outside the tallies, until one answers (up to 10 s), and records
// what the first met. The API server takes up its new kubelet client
// certificate on the first connection it makes to a kubelet after the file
// changed, and then closes every connection it had to kubelets (client-go's
// cert_rotation.go, CloseAll), cutting any exec, attach, port-forward or
// logs -f in flight: the API server's doing in phase 4 whatever the node
// does, so the counted requests begin after it (docs/ca-rotation.md).
func (r *rotation) apiServerTakesUpItsClient(ctx context.Context) {
	start := time.Now()
	var first error
	for attempt := 1; ; attempt++ {
		err := r.k.Watch.ExecUncounted(ctx)
		if attempt == 1 {
			first = err
		}
		if err == nil || time.Since(start) > 10*time.Second {
			r.phase4 = fmt.Sprintf("first request after %s: %v; answered after %d attempts, %s", phaseSwitchKubeletClient, first, attempt, time.Since(start).Round(time.Millisecond))
			if err != nil {
				r.problem("no exec answered through the API server for 10 s after %s: %v", phaseSwitchKubeletClient, err)
			}
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// restartAPIServer restarts the API server, as an operator's next change to
// its static pod does: every connection of the kubelet is made anew, with
// the client certificate and the CAs it holds now.
func restartAPIServer(ctx context.Context) error {
	if err := cp.StopAPIServer(); err != nil {
		return err
	}
	return cp.StartAPIServer(ctx)
}

// addCA is AddCA; the test's own dials to the kubelet trust the new CA too.
func (r *rotation) addCA(ctx context.Context) error {
	if err := cp.AddCA(ctx); err != nil {
		return err
	}
	r.k.Watch.Roots.AppendCertsFromPEM(cp.NewCACertPEM())
	return nil
}

// report logs the figures, then fails on what is wrong with them.
func (r *rotation) report() {
	w := r.k.Watch
	r.checkAlive()
	r.checkRestarts()
	gap := w.MaxLeaseGap(time.Now())
	if gap >= maxLeaseGap {
		r.problem("the Lease went %s without renewal (its duration is 40 s): the node would be marked NotReady; gaps over 15 s: %v",
			gap.Round(time.Second), longGaps(w.Leases, 15*time.Second))
	}
	for name, c := range map[string]*kubelettest.Tally{"node proxy /healthz": &w.Proxy, "kubectl logs": &w.Logs, "kubectl exec": &w.Exec} {
		if c.Before+c.After == 0 || len(c.Errs) > 0 {
			r.problem("%s: %s ok before/after the serving certificate's re-issue/failed: %v", name, c, c.Errs)
		}
	}
	if len(w.DialErrs) > 0 {
		r.problem("TLS dials to the kubelet failed: %v", w.DialErrs)
	}
	tlsFailures := map[string]int{}
	for _, lg := range []struct{ name, path string }{{"the kubelet", w.Log}, {"kube-apiserver", filepath.Join(cp.LogDir, "kube-apiserver.log")}} {
		lines := kubelettest.KlogLinesSince(lg.path, kubelettest.TLSFailureLogged, w.Start)
		tlsFailures[lg.name] = len(lines)
		if len(lines) > 0 {
			r.problem("%s logged %d TLS failures during the rotation (%s), the first: %s", lg.name, len(lines), lg.path, strings.Join(lines[:min(3, len(lines))], "\n"))
		}
	}
	if onDisk := kubelettest.CurrentLeaf(r.n.certDir, "kubelet-server"); onDisk == nil || len(w.Served) == 0 ||
		w.Served[len(w.Served)-1].Serial != kubelettest.ShortSerial(onDisk.SerialNumber) {
		r.problem("at the end the kubelet does not present the serving certificate on disk: served %s, on disk %s", w.Served, w.Serving)
	}
	r.t.Logf("CA rotation on Kubernetes %s: %s; %s", cp.Version(), r.restartsReport(), r.phase4)
	r.t.Logf("CA rotation: phases took %s; node on the new CA %s after SwitchSigners (client and serving certificates re-issued), "+
		"the kubelet using its new client certificate %s; kubelet PID %d for %s; longest Lease gap %s; through the API server (ok before/after the serving re-issue/failed): node proxy %s, "+
		"kubectl logs %s, kubectl exec %s; TLS dial errors %d; TLS failures logged %v; client certificates %s; serving certificates on disk %s, served %s",
		strings.Join(r.took, ", "), r.reissued, r.clientSwitched, r.pid, time.Since(w.Start).Round(time.Second), gap.Round(time.Second),
		w.Proxy, w.Logs, w.Exec, len(w.DialErrs), tlsFailures, w.Client, w.Serving, w.Served)
	for _, p := range r.nodeSide {
		r.t.Logf("node side (%s=off: not enforced): %s", nodeSideEnv, p)
	}
	if len(r.problems) > 0 {
		r.fatal("%s", strings.Join(r.problems, "\n"))
	}
}

// longGaps are the renewals that came more than d after the previous one,
// as "15:04:05+42s" (UTC).
func longGaps(renewals []time.Time, d time.Duration) []string {
	var out []string
	for i := 1; i < len(renewals); i++ {
		if g := renewals[i].Sub(renewals[i-1]); g > d {
			out = append(out, renewals[i-1].UTC().Format("15:04:05")+"+"+g.Round(time.Second).String())
		}
	}
	return out
}
