package fleet

import (
	"strings"
	"testing"
	"time"
)

func TestDistQuantiles(t *testing.T) {
	var ts []time.Duration
	for i := 100; i >= 1; i-- {
		ts = append(ts, time.Duration(i)*time.Second)
	}
	d := NewDist(ts)
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, time.Second}, {0.5, 50 * time.Second}, {0.99, 99 * time.Second}, {1, 100 * time.Second}} {
		if got := d.Quantile(c.q); got != c.want {
			t.Errorf("Quantile(%v) = %s, want %s", c.q, got, c.want)
		}
	}
	if got := NewDist(nil).String(); got != "—" {
		t.Errorf("empty Dist = %q", got)
	}
}

func TestPeakWithin(t *testing.T) {
	s := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Second)
		}
		return out
	}
	for _, c := range []struct {
		times []time.Duration
		want  int
	}{
		{nil, 0},
		{s(0, 5, 9), 3},
		{s(0, 5, 10), 2},         // 10 s apart is the next window
		{s(0, 8, 12, 13, 17), 4}, // 8..17, not tied to 10-s bins
	} {
		if got := peakWithin(c.times, 10*time.Second); got != c.want {
			t.Errorf("peakWithin(%v) = %d, want %d", c.times, got, c.want)
		}
	}
}

func TestNum(t *testing.T) {
	third := 0.0
	for range 6 {
		third += 1.0 / 3 // 1.9999999999999998
	}
	for _, c := range []struct {
		v    float64
		want string
	}{{2, "2"}, {third, "2"}, {0.5, "0.5"}, {4.256, "4.26"}, {0, "0"}, {-0.0001, "0"}} {
		if got := num(c.v); got != c.want {
			t.Errorf("num(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

func TestMarkdownRatios(t *testing.T) {
	d := secondsDist
	r := &Report{N: 2, ScaleUps: []*ScaleUp{
		{Limit: "default", LimitText: "default", Path: "certagent", N: 2, Written: d(1, 2), Serving: d(2, 3),
			Requests: map[string]float64{"create certificatesigningrequests": 2}, TokenRequests: 2, APIServerCPU: 0.05, Exact: true, ClientCSRs: 1, ServingCSRs: 1},
		{Limit: "default", LimitText: "default", Path: "kubelet", N: 2, Written: d(2, 4),
			Requests: map[string]float64{"create certificatesigningrequests": 1, "get /healthz": 1}, TokenRequests: 4, APIServerCPU: 0.1, Exact: true, ClientCSRs: 1},
	}}
	md := r.Markdown()
	markdownHas(t, md, "| certagent | default | 0.50 / 0.50 / 0.50 | 0.50 | 1.00 | 0.50 | — |", "| &nbsp;&nbsp;get /healthz | 0 | 1 |", "1 + 1 (every node)")
}

func TestMarkdownOverload(t *testing.T) {
	ms := millisDist
	r := &Report{N: 2, Overloads: []*Overload{
		{Mode: apfShipped, N: 2, Inflight: 20, Mutating: 10, ProbeRate: 10, Done: ms(1000, 2000), ProbeIdle: ms(2, 3), ProbeDuring: ms(4, 9),
			ProbeRequests: 30, Requests: map[string]float64{"create certificatesigningrequests": 2}, Throttled: 0.5, Exact: true,
			Dispatched: map[string]float64{"certagent-bootstrap": 4, "certagent-node-certificates": 6}},
		{Mode: apfDefault, N: 2, Inflight: 20, Mutating: 10, ProbeRate: 10, Done: ms(1000, 3000), ProbeIdle: ms(2, 3), ProbeDuring: ms(40, 900),
			ProbeRequests: 31, Probe429: 2, Requests: map[string]float64{"create certificatesigningrequests": 2}, Throttled: 1, Exact: true,
			Rejected: map[string]float64{"global-default (queue-full)": 3}, FailedAttempts: 2, NodesFailed: 1,
			QueueWait: map[string]time.Duration{"global-default": 1500 * time.Microsecond, "system": 2 * time.Millisecond}},
	}}
	md := r.Markdown()
	markdownHas(t, md,
		"lowered to 20 + 10 concurrent requests",
		"| probe latency during the scale-up, p50 / p99 / max | 4 / 9 / 9 ms | 40 / 900 / 900 ms |",
		"| probe requests during the scale-up: answered 429 / failed otherwise | 30: 0 / 0 | 31: 2 / 0 |",
		"| the fleet's requests answered 429, per node (in all) | 0.5 (1) | 1 (2) |",
		"| APF rejections by priority level (reason) | 0 | global-default (queue-full) 3 |",
		"| mean APF queue wait: global-default / system / certagent-node-certificates | — / — / — | 1.5 ms / 2.0 ms / — |",
		"| attempts that failed into certagent's back-off (nodes) | 0 (0) | 2 (1) |",
		"| dispatched by certagent's FlowSchemas | bootstrap 4, node-certificates 6 | bootstrap 0, node-certificates 0 |",
	)
}

// TestMarkdownRounds: fleets that ran several rounds are told apart in the
// headings, compared round with round, and summed up by the median of each
// ratio.
func TestMarkdownRounds(t *testing.T) {
	secs := secondsDist
	fleet := func(path string, round int, written Dist, cpu float64) *ScaleUp {
		return &ScaleUp{Limit: "raised", LimitText: "raised limit (QPS 500, burst 1000)", Path: path, Round: round, N: 2, Written: written,
			Requests: map[string]float64{"create certificatesigningrequests": 1}, TokenRequests: 1, APIServerCPU: cpu, NodeCPU: cpu}
	}
	r := &Report{N: 2, ScaleUps: []*ScaleUp{
		fleet(variantClientOnly, 1, secs(8, 10), 0.015), fleet(variantKubelet, 1, secs(10, 10), 0.010),
		fleet(variantClientOnly, 2, secs(9, 12), 0.012), fleet(variantKubelet, 2, secs(9, 10), 0.012),
		fleet(variantClientOnly, 3, secs(6, 9), 0.018), fleet(variantKubelet, 3, secs(8, 12), 0.012),
	}}
	md := r.Markdown()
	markdownHas(t, md,
		"| certagent, client only, QPS 500 #1 | kubelet, QPS 500 #1 | certagent, client only, QPS 500 #2 |",
		"| certagent, client only #1 | raised limit (QPS 500, burst 1000) | 0.80 / 1.00 / 1.00 | 1.00 | 1.00 | 1.50 | 1.50 |",
		"| certagent, client only #3 | raised limit (QPS 500, burst 1000) | 0.75 / 0.75 / 0.75 | 1.00 | 1.00 | 1.50 | 1.50 |",
		"| **certagent, client only, median of 3 rounds** | raised limit (QPS 500, burst 1000) | 0.80 / 1.00 / 1.00 | 1.00 | 1.00 | 1.50 | 1.50 |",
	)
	if strings.Contains(md, "#1 | raised limit (QPS 500, burst 1000) | 0.90") {
		t.Errorf("round 1 compared with another round's kubelet:\n%s", md)
	}
}

// markdownHas fails t for each of wants that md lacks.
func markdownHas(t *testing.T, md string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// secondsDist is the distribution of times given in seconds.
func secondsDist(v ...float64) Dist {
	var ts []time.Duration
	for _, x := range v {
		ts = append(ts, time.Duration(x*float64(time.Second)))
	}
	return NewDist(ts)
}

// TestMarkdownJoins: the attestation comparison's table gives each fleet's
// requests by identity, its CSRs' requester and the swtpm figures for the
// attested fleet only.
func TestMarkdownJoins(t *testing.T) {
	d := secondsDist
	r := &Report{N: 2, Joins: []*JoinRun{
		{Path: "attestation", Round: 1, N: 2, TPMManufacture: 3 * time.Second, TPMStart: time.Second, Written: d(1, 2),
			Requests: map[string]map[string]float64{
				"the node's own":        {"create selfsubjectreviews": 1, "create events": 1},
				"the service account's": {"create certificatesigningrequests": 1, "update certificatesigningrequests/approval": 1},
			},
			Requesters: map[string]int{"system:serviceaccount:certagent-system:certagent-cluster": 2}, Exact: true,
			ServiceCPU: 0.006, TPMCPU: 0.1, Attempts: map[string]float64{"challenged": 2, "issued": 2}},
		{Path: "bootstrap token", Round: 1, N: 2, Written: d(1, 3),
			Requests:   map[string]map[string]float64{"the bootstrap token's": {"create certificatesigningrequests": 1, "watch certificatesigningrequests": 1}},
			Requesters: map[string]int{"system:bootstrap:abc": 1}, Exact: false, Exited: 1},
	}}
	markdownHas(t, r.Markdown(),
		"| | attestation | bootstrap token |",
		"| swtpm manufactured / started (not counted) | 3.0 s / 1.0 s | — |",
		"| kubelet.conf written, p50 / p99 / max | 1.0 s / 2.0 s / 2.0 s | 1.0 s / 3.0 s / 3.0 s |",
		"| API requests per node, the service account's | 2: create certificatesigningrequests 1, update certificatesigningrequests/approval 1 | 0 |",
		"| API requests per node, the bootstrap token's | 0 | 2: create certificatesigningrequests 1, watch certificatesigningrequests 1 |",
		"| true; system:serviceaccount:certagent-system:certagent-cluster 2 | false; system:bootstrap:abc 1 |",
		"| attestation service CPU per node | 6.0 ms | 0.0 ms |",
		"| the node's swtpm CPU (a real node's TPM is its own chip) | 100.0 ms | — |",
		"| service attempts (challenged, issued, refused) | 2, 2, 0 | — |",
		"| failures: daemons exited, kubelet.conf not working | 0, 0 | 1, 0 |",
	)
}
