package fleet

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/test/controlplane"
)

var (
	flagOverloadN    = flag.Int("fleet.overload.n", envInt("FLEET_OVERLOAD_N", 0), "nodes in each fleet of the overload comparison (default $FLEET_OVERLOAD_N, else -fleet.n)")
	flagInflight     = flag.Int("fleet.overload.inflight", 20, "the API server's --max-requests-inflight in the overload comparison (its default: 400)")
	flagMutating     = flag.Int("fleet.overload.mutating", 10, "the API server's --max-mutating-requests-inflight in the overload comparison (its default: 200)")
	flagDefaultFirst = flag.Bool("fleet.overload.default-first", false, "run the default configuration first (else the shipped one is first: a warmed-up control plane favours the default)")
	flagProbeRate    = flag.Float64("fleet.overload.probe-rate", 10, "the probe user's requests per second")
)

// The two runs of the overload comparison.
const (
	apfShipped = "with certagent-flowcontrol.yaml"
	apfDefault = "default APF"
)

// overloadIdle is how long the probe runs alone before each fleet starts.
const overloadIdle = 3 * time.Second

// TestOverload starts N certagent daemons at once against an API server whose
// concurrency is lowered (-fleet.overload.inflight and .mutating, 20 and 10:
// 30 seats shared by every priority level instead of 600) so that a scale-up
// overloads it on this machine, while an ordinary user (probeUser) reads
// probePath at a steady rate without client-side retries. Once with
// packaging/flowcontrol/certagent-flowcontrol.yaml applied, read and applied
// as shipped, then, after it is deleted again, with the default API Priority
// and Fairness configuration, on the same control plane
// (-fleet.overload.default-first reverses the order). Every node must end
// with its certificates and exactly one client and one serving CSR (429s
// delay nodes, they do not lose them or add CSRs), every probe request must be
// answered, and with the shipped configuration the fleet's certificate
// requests must go through its FlowSchemas and the probe must get no 429.
func TestOverload(t *testing.T) {
	stopSharedCluster() // the tests before are done with it: leave the machine to this one
	n := *flagOverloadN
	if n == 0 {
		n = *flagN
	}
	c := startCluster(t, "overload", controlplane.Options{
		ControllerManagerQPS: float32(*flagQPS), ControllerManagerBurst: 2 * int(*flagQPS),
		MaxRequestsInflight: *flagInflight, MaxMutatingRequestsInflight: *flagMutating,
	})
	defer c.stop()
	probeCfg := probeConfig(t, c)
	tokenCfg := &rest.Config{Host: c.URL, BearerToken: c.token, TLSClientConfig: rest.TLSClientConfig{CAData: c.CACertPEM}}
	nodeCfg, err := c.UserConfig("system:node:apf-check", "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	// The shipped configuration first: whatever a warmed-up control plane
	// gains, the default configuration's run gets it.
	modes := []string{apfShipped, apfDefault}
	if *flagDefaultFirst {
		modes = []string{apfDefault, apfShipped}
	}
	for _, mode := range modes {
		ok := t.Run(mode, func(t *testing.T) {
			wantToken, wantNode := "global-default", "system-nodes"
			if mode == apfShipped {
				undo := applyFlowControl(t, c)
				defer undo()
				wantToken, wantNode = "certagent-bootstrap", "certagent-node-certificates"
			}
			// The API server applies a change within seconds: wait until its
			// answers name the FlowSchema each credential should meet.
			waitClassified(t, c, tokenCfg, "the bootstrap token", wantToken)
			waitClassified(t, c, nodeCfg, "a node", wantNode)
			c.deleteCSRs(t)
			overloadRun(t, c, probeCfg, mode, n)
		})
		if !ok {
			return
		}
	}
}

// overloadRun runs one fleet of n against c with the probe running, checks
// it and records its figures.
func overloadRun(t *testing.T, c *cluster, probeCfg *rest.Config, mode string, n int) {
	prefix := "apfd"
	if mode == apfShipped {
		prefix = "apfs"
	}
	rejected0, dispatched0, wait0, seats := apfCounts(t, c)
	p := startProbe(t, probeCfg, *flagProbeRate)
	defer p.halt()
	time.Sleep(overloadIdle)
	f := newFleet(t, c, certagentPath, prefix, n, "")
	// On real nodes every daemon brings its own CPU; here they share the
	// control plane's two cores, and at the same priority they slow the API
	// server and the probe alike, which no APF configuration can change.
	// At nice 19 they take what the control plane leaves.
	f.niced = true
	f.run(t)
	f.waitAll(t, "their certificates", scaleUpTimeout, hasServing)
	var done []time.Duration
	var last time.Time
	for _, m := range f.members {
		sv := m.servingStored()
		if sv.IsZero() {
			t.Fatalf("%s: no serving %q line in its log:\n%s", m.name, "certificate stored", tailFile(m.log, 20))
		}
		done, last = append(done, sv.Sub(f.start)), later(last, sv)
	}
	p.halt()
	end := last.Add(10 * time.Second) // trailing requests (Events) included
	time.Sleep(time.Until(end))
	rejected1, dispatched1, wait1, _ := apfCounts(t, c)

	o := &Overload{Mode: mode, N: n, Inflight: *flagInflight, Mutating: *flagMutating, ProbeRate: *flagProbeRate, Done: NewDist(done)}
	o.ProbeIdle, _, _, _ = p.stats(f.start.Add(-overloadIdle), f.start)
	o.ProbeDuring, o.ProbeRequests, o.Probe429, o.ProbeErrors = p.stats(f.start, last)
	o.Requests, _, o.Throttled = f.requests(t, f.start, end)
	o.Rejected, o.Dispatched = diffCounts(rejected1, rejected0), diffCounts(dispatched1, dispatched0)
	waits := diffCounts(wait1, wait0)
	o.Seats = map[string]float64{}
	o.QueueWait = map[string]time.Duration{}
	for _, level := range []string{"global-default", "system", "certagent-node-certificates"} {
		// The gauge of a deleted level lingers: only levels that exist.
		if _, err := c.api().FlowcontrolV1().PriorityLevelConfigurations().Get(context.Background(), level, metav1.GetOptions{}); err == nil {
			o.Seats[level] = seats[level]
		}
		if count := waits[level+"_count"]; count > 0 {
			o.QueueWait[level] = time.Duration(waits[level+"_sum"] / count * float64(time.Second))
		}
	}

	// A 429 that client-go's own retries did not absorb fails the attempt
	// into certagent's back-off, which logs it.
	for _, m := range f.members {
		failed := 0
		for _, l := range m.lines() {
			if l.Msg == "attempt failed" {
				failed++
			}
		}
		o.FailedAttempts += failed
		if failed > 0 {
			o.NodesFailed++
		}
	}

	perNode := f.csrsPerNode(t)
	o.Exact = true
	for _, m := range f.members {
		got := perNode[m.name]
		if got[certificatesv1.KubeAPIServerClientKubeletSignerName] != 1 || got[certificatesv1.KubeletServingSignerName] != 1 {
			o.Exact = false
			t.Errorf("%s: %d client and %d serving CSRs, want 1 and 1", m.name,
				got[certificatesv1.KubeAPIServerClientKubeletSignerName], got[certificatesv1.KubeletServingSignerName])
		}
	}
	if err := f.parallel(func(m *member) error {
		if who, err := whoAmI(m); err != nil || who != "system:node:"+m.name {
			return fmt.Errorf("kubelet.conf: the API server says %q, %v", who, err)
		}
		return checkServing(m)
	}); err != nil {
		t.Error(err)
	}
	f.stop()
	report.Overloads = append(report.Overloads, o)

	t.Logf("%s, %d nodes, API server --max-requests-inflight %d --max-mutating-requests-inflight %d", mode, n, o.Inflight, o.Mutating)
	t.Logf("  serving certificate stored (p50 / p99 / max): %s", o.Done)
	t.Logf("  probe (%s, %g/s): alone %s; during the scale-up %s over %d requests, %d answered 429, %d failed otherwise",
		probeUser, o.ProbeRate, o.ProbeIdle.Millis(), o.ProbeDuring.Millis(), o.ProbeRequests, o.Probe429, o.ProbeErrors)
	t.Logf("  the fleet: %s API requests per node, %s answered 429 per node (%d in all); CSRs 1 + 1 on every node: %v",
		num(sum(o.Requests)), num(o.Throttled), int(o.Throttled*float64(n)+0.5), o.Exact)
	t.Logf("  attempts that failed into certagent's back-off: %d on %d nodes", o.FailedAttempts, o.NodesFailed)
	t.Logf("  seats: %s; mean APF queue wait by priority level: %s", countsText(o.Seats), waitText(o.QueueWait))
	t.Logf("  APF rejections by priority level: %s; dispatched by FlowSchema: %s", countsText(o.Rejected), countsText(o.Dispatched))

	if o.ProbeRequests == 0 || o.ProbeErrors > 0 {
		t.Errorf("the probe's requests during the scale-up: %d, of which %d failed (not 200, not 429): %v", o.ProbeRequests, o.ProbeErrors, p.firstError())
	}
	if mode == apfShipped {
		if o.Probe429 > 0 {
			t.Errorf("with certagent's FlowSchema the probe was still answered 429 %d times", o.Probe429)
		}
		for _, fs := range []string{"certagent-bootstrap", "certagent-node-certificates"} {
			if o.Dispatched[fs] < float64(n) {
				t.Errorf("FlowSchema %s dispatched %.0f requests during the scale-up of %d nodes, want at least one per node", fs, o.Dispatched[fs], n)
			}
		}
	}
}
