// Package fleet runs fleets of real certagent daemons (and, to compare, the
// kubelet's own client bootstrap) against one real control plane: a scale-up
// of N nodes at once with the controller-manager's default and a raised
// client rate limit, an API server outage under N running daemons, the
// renewal wave of N nodes whose certificates were issued together, and a
// scale-up that overloads an API server with lowered concurrency, with and
// without the shipped API Priority and Fairness configuration. The tests
// assert what must hold (every node ends with its certificates, one client
// and one serving CSR per node, no CSR from an outage); this file writes what
// they measured: a markdown table (fleet.md) and the data of the plot
// (fleet.gp turns them into fleet.png).
package fleet

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Report is everything a `make fleet` run measured.
type Report struct {
	N          int
	Kubernetes string
	RaisedQPS  float32
	Started    time.Time
	Took       time.Duration
	Notes      []string
	ScaleUps   []*ScaleUp
	Outage     *Outage
	Waves      []*Wave
	Overloads  []*Overload
	Joins      []*JoinRun
	Approvers  []*ApproverRun
}

// JoinRun is one fleet of N joining at once by TPM attestation or by the
// bootstrap token (TestAttestationScaleUp), serving certificate off.
type JoinRun struct {
	Path  string // "attestation" or "bootstrap token"
	Round int
	N     int
	// The swtpm instances' manufacture (swtpm_setup) and start, and the
	// enrolment, all before the fleet's start: not counted in its times.
	TPMManufacture, TPMStart, Enroll time.Duration
	Spawn                            time.Duration
	Written                          Dist // kubelet.conf on disk (its mtime), from the fleet's start
	// Requests per node by identity (the node's own, the service account's,
	// the bootstrap token's), then by "verb resource".
	Requests   map[string]map[string]float64
	Requesters map[string]int // client CSRs by requester
	Exact      bool           // exactly one client CSR (and no other) for every node
	// CPU seconds per node over the window: the attestation service's, the
	// API server's, the node's own certagent's.
	ServiceCPU, APIServerCPU, NodeCPU float64
	TPMCPU                            float64            // the node's swtpm (a real node's TPM is its own chip)
	Attempts                          map[string]float64 // the service's attempts in the window, by result
	Exited                            int                // daemons that exited
	Failures                          int                // nodes whose kubelet.conf did not work afterwards
}

// Dist is a distribution of per-node times, from the fleet's start.
type Dist struct {
	Times []time.Duration // sorted
}

// NewDist sorts ts.
func NewDist(ts []time.Duration) Dist {
	s := append([]time.Duration(nil), ts...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return Dist{Times: s}
}

// Quantile is the q-quantile (nearest rank), 0 when empty.
func (d Dist) Quantile(q float64) time.Duration {
	if len(d.Times) == 0 {
		return 0
	}
	i := int(q*float64(len(d.Times))+0.999999) - 1
	i = max(0, min(i, len(d.Times)-1))
	return d.Times[i]
}

// Millis is d as "p50 / p99 / max" in milliseconds.
func (d Dist) Millis() string {
	if len(d.Times) == 0 {
		return "—"
	}
	ms := func(q float64) float64 { return float64(d.Quantile(q)) / float64(time.Millisecond) }
	return fmt.Sprintf("%.0f / %.0f / %.0f ms", ms(0.5), ms(0.99), ms(1))
}

func (d Dist) String() string {
	if len(d.Times) == 0 {
		return "—"
	}
	return fmt.Sprintf("%s / %s / %s", secs(d.Quantile(0.5)), secs(d.Quantile(0.99)), secs(d.Quantile(1)))
}

// ScaleUp is one fleet of N nodes started at once.
type ScaleUp struct {
	Limit     string // "default" or "raised"
	LimitText string // the controller-manager's limit, in words
	Path      string // "certagent", "certagent, client only" or "kubelet"
	Round     int    // 1 for the first run of Path under Limit, 2 for the next…
	N         int
	Spawn     time.Duration // starting every process took
	Written   Dist          // kubelet.conf on disk (its mtime): the like-for-like client time
	Proven    Dist          // certagent: kubelet.conf accepted by the API server (its log)
	Serving   Dist          // certagent: serving certificate stored (its log)
	// Requests per node by "verb resource" (the audit log, the fleet's users,
	// from its start to 10 s after the last node was done).
	Requests map[string]float64
	// TokenRequests per node are those made with the bootstrap token: what
	// obtaining the client certificate cost, like for like between the two.
	TokenRequests float64
	Throttled     float64 // 429 answers per node
	// CSRs per node (all nodes had exactly these many if Exact).
	ClientCSRs, ServingCSRs int
	Exact                   bool
	APIServerCPU            float64      // seconds over the same window, per node
	APIServerPeakKiB        float64      // peak RSS above the start, per node
	ControllerManagerCPU    float64      // seconds over the same window, per node
	NodeCPU                 float64      // seconds of the fleet's own processes, per node
	Idle                    DaemonMemory // certagent daemons once all were done
	Restarts                int          // kubelet processes restarted after a failure
}

// slug names the variant in file names.
func (s *ScaleUp) slug() string {
	switch s.Path {
	case "certagent, client only":
		return "certagent-client"
	}
	return s.Path
}

// Outage is the API server stopped under N running daemons.
type Outage struct {
	N               int
	Down            time.Duration
	ReadyDuring     int            // daemons whose /readyz answered 200 while it was down
	FirstTen        int            // requests by the nodes in the first 10 s after it was back
	FirstTenByKind  map[string]int //
	Healthy         time.Duration  // until every daemon's /healthz and /readyz answered 200
	CSRsBefore      int
	CSRsAfter       int
	CSRCreates      int // CSR creations in the audit log from the stop to 30 s after the return
	RequestsAfter30 int // requests by the nodes from the return to 30 s after
	// Since is how long after the bootstrap the daemons' Memory was read
	// (probed, and a forced collection past).
	Since  time.Duration
	Memory DaemonMemory
}

// DaemonMemory is the fleet's daemons' memory at one moment, mean and max
// over the daemons, in MiB: anonymous (RssAnon), PSS and RSS.
type DaemonMemory struct {
	AnonMean, AnonMax, PSSMean, PSSMax, RSSMean, RSSMax float64
}

func (m DaemonMemory) String() string {
	return fmt.Sprintf("anonymous %.1f / %.1f MiB, PSS %.1f / %.1f MiB, RSS %.1f / %.1f MiB", m.AnonMean, m.AnonMax, m.PSSMean, m.PSSMax, m.RSSMean, m.RSSMax)
}

// Overload is a scale-up against an API server whose concurrency is lowered,
// with an ordinary user's reads running, under one API Priority and Fairness
// configuration.
type Overload struct {
	Mode               string // "default APF" or "with certagent-flowcontrol.yaml"
	N                  int
	Inflight, Mutating int     // the API server's --max-requests-inflight, --max-mutating-requests-inflight
	ProbeRate          float64 // the probe's requests per second
	Done               Dist    // serving certificate stored (certagent's log)
	ProbeIdle          Dist    // the probe's latency (answered 200) before the fleet started
	ProbeDuring        Dist    // … from the fleet's start until the last node was done
	ProbeRequests      int     // started in that window
	Probe429           int     // … answered 429
	ProbeErrors        int     // … not answered 200 or 429
	// The fleet's requests per node by "verb resource" and its 429 answers
	// per node (the audit log), from its start to 10 s after the last node.
	Requests  map[string]float64
	Throttled float64
	Exact     bool // every node: 1 client + 1 serving CSR
	// Attempts that failed into certagent's back-off ("attempt failed" in
	// the nodes' logs; client-go's own retries of a 429 are not counted),
	// and on how many nodes.
	FailedAttempts, NodesFailed int
	// The API server's API Priority and Fairness counters over the same
	// window: requests rejected by priority level, dispatched by FlowSchema.
	Rejected, Dispatched map[string]float64
	// QueueWait is the mean time the requests of a priority level that were
	// executed waited in its queues over the window (APF's own figure:
	// what the level's users wait for a seat, not the request's work).
	QueueWait map[string]time.Duration
	Seats     map[string]float64 // the same levels' nominal seats (apiserver_flowcontrol_nominal_limit_seats)
}

// Wave is the first renewal of N nodes' certificates issued together.
type Wave struct {
	Policy     string // "default (70–90 %)" or "renewBefore …"
	N          int
	Issued     time.Duration // the last node's serving certificate after the fleet's start
	Renewals   int           // first renewals seen (client + serving)
	First      time.Duration // from the fleet's start
	Last       time.Duration
	PeakPer10s int
	Bins       []int // renewals per 10 s from the fleet's start
}

// Write writes fleet.md and the plot's data files into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "fleet.md"), []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	for _, s := range r.ScaleUps {
		round := "" // the plot shows the first round; later ones are kept beside it
		if s.Round > 1 {
			round = fmt.Sprintf("-%d", s.Round)
		}
		if err := writeCurve(filepath.Join(dir, fmt.Sprintf("scaleup-%s-%s%s.dat", s.Limit, s.slug(), round)), s.Written); err != nil {
			return err
		}
		if len(s.Serving.Times) > 0 {
			if err := writeCurve(filepath.Join(dir, fmt.Sprintf("scaleup-%s-serving.dat", s.Limit)), s.Serving); err != nil {
				return err
			}
		}
	}
	for _, w := range r.Waves {
		var b strings.Builder
		fmt.Fprintf(&b, "# seconds from the fleet's start, renewals in the 10 s from there (%s)\n", w.Policy)
		for i, n := range w.Bins {
			fmt.Fprintf(&b, "%d %d\n", i*10, n)
		}
		name := "wave-default.dat"
		if strings.HasPrefix(w.Policy, "renewBefore") {
			name = "wave-renewbefore.dat"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeCurve writes "seconds nodes" steps: how many nodes had it by then.
func writeCurve(path string, d Dist) error {
	var b strings.Builder
	b.WriteString("# seconds from the fleet's start, nodes done by then\n0 0\n")
	for i, t := range d.Times {
		fmt.Fprintf(&b, "%.3f %d\n", t.Seconds(), i+1)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// Markdown renders the tables.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Fleet: N = %d nodes on one control plane (Kubernetes %s)\n\n", r.N, r.Kubernetes)
	fmt.Fprintf(&b, "Run %s, %s in all. Times are from the moment the fleet's processes started (p50 / p99 / max).\n\n",
		r.Started.UTC().Format("2006-01-02 15:04Z"), r.Took.Round(time.Second))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n")
	}
	if len(r.ScaleUps) > 0 {
		r.scaleUpTable(&b)
		r.ratioTable(&b)
	}
	if len(r.Joins) > 0 {
		r.joinTable(&b)
	}
	if len(r.Approvers) > 0 {
		r.approverTable(&b)
	}
	if o := r.Outage; o != nil {
		fmt.Fprintf(&b, "## API server outage under %d running daemons\n\n| what | result |\n|---|---|\n", o.N)
		fmt.Fprintf(&b, "| API server down | %s |\n", secs(o.Down))
		fmt.Fprintf(&b, "| daemons whose /readyz answered 200 during the outage | %d of %d |\n", o.ReadyDuring, o.N)
		fmt.Fprintf(&b, "| requests by the nodes in the first 10 s after its return | %d%s |\n", o.FirstTen, kinds(o.FirstTenByKind))
		fmt.Fprintf(&b, "| requests by the nodes in the first 30 s after its return | %d |\n", o.RequestsAfter30)
		fmt.Fprintf(&b, "| every daemon's /healthz and /readyz 200 after its return | %s |\n", secs(o.Healthy))
		fmt.Fprintf(&b, "| CSRs before / after; CSR creations from the stop to 30 s after the return | %d / %d; %d |\n", o.CSRsBefore, o.CSRsAfter, o.CSRCreates)
		fmt.Fprintf(&b, "| daemons' memory %s after the bootstrap (probed; a forced collection past), mean / max | %s |\n\n", secs(o.Since), o.Memory)
	}
	if len(r.Overloads) > 0 {
		r.overloadTable(&b)
	}
	if len(r.Waves) > 0 {
		b.WriteString("## Renewal wave: certificates of 10 minutes (`rotation.requestedDuration: 10m`) issued together\n\n")
		b.WriteString("| policy | nodes | all issued by | first renewals (client + serving) | first … last renewal | peak renewals per 10 s |\n|---|---|---|---|---|---|\n")
		for _, w := range r.Waves {
			fmt.Fprintf(&b, "| %s | %d | %s | %d | %s … %s | %d |\n", w.Policy, w.N, secs(w.Issued), w.Renewals, secs(w.First), secs(w.Last), w.PeakPer10s)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (r *Report) scaleUpTable(b *strings.Builder) {
	cols := r.ScaleUps
	fmt.Fprintf(b, "## Scale-up: %d nodes start at once\n\nThe controller-manager's client rate limit: QPS 20 is its default (burst 30), the other the raised one (burst twice the QPS).\n\n", r.N)
	row := table(b, cols, func(s *ScaleUp) string { return s.Path + ", " + shortLimit(s.LimitText) + r.roundText(s) })
	certagentOnly := func(f func(*ScaleUp) string) func(*ScaleUp) string {
		return func(s *ScaleUp) string {
			if !strings.HasPrefix(s.Path, "certagent") {
				return "—"
			}
			return f(s)
		}
	}
	servingOnly := func(f func(*ScaleUp) string) func(*ScaleUp) string {
		return func(s *ScaleUp) string {
			if len(s.Serving.Times) == 0 {
				return "—"
			}
			return f(s)
		}
	}
	row("processes started in", func(s *ScaleUp) string { return secs(s.Spawn) })
	row("kubelet.conf written", func(s *ScaleUp) string { return s.Written.String() })
	row("kubelet.conf accepted by the API server", certagentOnly(func(s *ScaleUp) string { return s.Proven.String() }))
	row("serving certificate stored", servingOnly(func(s *ScaleUp) string { return s.Serving.String() }))
	row("CSRs per node, client + serving", func(s *ScaleUp) string {
		exact := "every node"
		if !s.Exact {
			exact = "NOT every node"
		}
		return fmt.Sprintf("%d + %d (%s)", s.ClientCSRs, s.ServingCSRs, exact)
	})
	keys := map[string]bool{}
	for _, s := range cols {
		for k := range s.Requests {
			keys[k] = true
		}
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	row("API requests per node", func(s *ScaleUp) string { return num(sum(s.Requests)) })
	row("&nbsp;&nbsp;with the bootstrap token (the client certificate)", func(s *ScaleUp) string { return num(s.TokenRequests) })
	for _, k := range sorted {
		row("&nbsp;&nbsp;"+k, func(s *ScaleUp) string { return num(s.Requests[k]) })
	}
	row("429 answers per node", func(s *ScaleUp) string { return num(s.Throttled) })
	row("kube-apiserver CPU per node", func(s *ScaleUp) string { return fmt.Sprintf("%.1f ms", 1000*s.APIServerCPU) })
	row("kube-apiserver peak RSS growth per node", func(s *ScaleUp) string { return fmt.Sprintf("%.0f KiB", s.APIServerPeakKiB) })
	row("kube-controller-manager CPU per node", func(s *ScaleUp) string { return fmt.Sprintf("%.1f ms", 1000*s.ControllerManagerCPU) })
	row("daemons' memory once idle, mean / max", servingOnly(func(s *ScaleUp) string { return s.Idle.String() }))
	row("CPU of the node's own process per node", func(s *ScaleUp) string { return fmt.Sprintf("%.1f ms", 1000*s.NodeCPU) })
	row("processes restarted after a failure", func(s *ScaleUp) string { return fmt.Sprint(s.Restarts) })
	b.WriteString("\n")
}

// roundText is " #2" for the second run of s's path under its limit, ""
// when the path ran once.
func (r *Report) roundText(s *ScaleUp) string {
	for _, o := range r.ScaleUps {
		if o.Limit == s.Limit && o.Path == s.Path && o.Round > 1 {
			return fmt.Sprintf(" #%d", max(s.Round, 1))
		}
	}
	return ""
}

// scaleUpRatios are certagent ÷ the kubelet of one pair of fleets (or the
// medians of several): kubelet.conf on disk at p50, p99 and max, requests
// with the bootstrap token, all requests, API server CPU, node process CPU.
type scaleUpRatios [7]float64

func ratiosOf(c, k *ScaleUp) scaleUpRatios {
	q := func(p float64) float64 { return c.Written.Quantile(p).Seconds() / k.Written.Quantile(p).Seconds() }
	return scaleUpRatios{q(0.5), q(0.99), q(1), c.TokenRequests / k.TokenRequests, sum(c.Requests) / sum(k.Requests),
		c.APIServerCPU / k.APIServerCPU, c.NodeCPU / k.NodeCPU}
}

func (x scaleUpRatios) row(path, limit string) string {
	f := func(v float64) string {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return "—"
		}
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("| %s | %s | %s / %s / %s | %s | %s | %s | %s |", path, limit, f(x[0]), f(x[1]), f(x[2]), f(x[3]), f(x[4]), f(x[5]), f(x[6]))
}

// medianRatios is, for each ratio, its median over pairs.
func medianRatios(pairs []scaleUpRatios) scaleUpRatios {
	var out scaleUpRatios
	for i := range out {
		vs := make([]float64, len(pairs))
		for j, p := range pairs {
			vs[j] = p[i]
		}
		sort.Float64s(vs)
		if n := len(vs); n%2 == 1 {
			out[i] = vs[n/2]
		} else {
			out[i] = (vs[n/2-1] + vs[n/2]) / 2
		}
	}
	return out
}

// ratioTable compares each certagent fleet with the kubelet's path under the
// same limit, round with round (the pair ran one after the other): kubelet.conf
// on disk (the same step for both), the requests made with the bootstrap token
// (the client certificate's), all requests, the API server's and the node
// processes' CPU per node; and, where the pair ran several times, the median
// of each ratio over the rounds.
func (r *Report) ratioTable(b *strings.Builder) {
	var rows []string
	pairs := map[string][]scaleUpRatios{} // by path and limit text
	var order []string
	for _, c := range r.ScaleUps {
		if !strings.HasPrefix(c.Path, "certagent") {
			continue
		}
		for _, k := range r.ScaleUps {
			if k.Path != "kubelet" || k.Limit != c.Limit || max(k.Round, 1) != max(c.Round, 1) {
				continue
			}
			x := ratiosOf(c, k)
			rows = append(rows, x.row(c.Path+r.roundText(c), c.LimitText))
			key := c.Path + "|" + c.LimitText
			if pairs[key] == nil {
				order = append(order, key)
			}
			pairs[key] = append(pairs[key], x)
		}
	}
	if len(rows) == 0 {
		return
	}
	for _, key := range order {
		if n := len(pairs[key]); n > 1 {
			path, limit, _ := strings.Cut(key, "|")
			rows = append(rows, medianRatios(pairs[key]).row(fmt.Sprintf("**%s, median of %d rounds**", path, n), limit))
		}
	}
	b.WriteString("certagent ÷ the kubelet's path under the same limit (below 1: certagent is faster or cheaper). \"certagent\" also obtains the serving certificate; \"client only\" does the kubelet's work:\n\n")
	b.WriteString("| certagent | controller-manager | kubelet.conf written, p50 / p99 / max | requests with the bootstrap token | all API requests | kube-apiserver CPU | node process CPU |\n|---|---|---|---|---|---|---|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n\n")
}

func (r *Report) overloadTable(b *strings.Builder) {
	cols := r.Overloads
	o := cols[0]
	fmt.Fprintf(b, "## Overload: %d nodes at once against an API server lowered to %d + %d concurrent requests\n\n", o.N, o.Inflight, o.Mutating)
	fmt.Fprintf(b, "`--max-requests-inflight %d --max-mutating-requests-inflight %d` (defaults 400 and 200): with API Priority and Fairness their sum is the seats all priority levels share, lowered so that this machine's fleet overloads it. "+
		"A user `%s` (not system:masters: global-default, like an ordinary user) reads `%s` %g times a second without client-side retries. "+
		"Both ran on one control plane, in the order of the columns (the shipped configuration deleted after its run; TestOverload).\n\n", o.Inflight, o.Mutating, probeUser, probePath, o.ProbeRate)
	row := table(b, cols, func(c *Overload) string { return c.Mode })
	row("serving certificate stored, p50 / p99 / max", func(c *Overload) string { return c.Done.String() })
	row("CSRs per node, client + serving", func(c *Overload) string {
		if c.Exact {
			return "1 + 1 (every node)"
		}
		return "NOT 1 + 1 on every node"
	})
	row("probe latency before the fleet, p50 / p99 / max", func(c *Overload) string { return c.ProbeIdle.Millis() })
	row("probe latency during the scale-up, p50 / p99 / max", func(c *Overload) string { return c.ProbeDuring.Millis() })
	row("probe requests during the scale-up: answered 429 / failed otherwise", func(c *Overload) string {
		return fmt.Sprintf("%d: %d / %d", c.ProbeRequests, c.Probe429, c.ProbeErrors)
	})
	row("the fleet's API requests per node", func(c *Overload) string { return num(sum(c.Requests)) })
	row("the fleet's requests answered 429, per node (in all)", func(c *Overload) string {
		return fmt.Sprintf("%s (%.0f)", num(c.Throttled), c.Throttled*float64(c.N))
	})
	row("attempts that failed into certagent's back-off (nodes)", func(c *Overload) string {
		return fmt.Sprintf("%d (%d)", c.FailedAttempts, c.NodesFailed)
	})
	levels := func(f func(c *Overload, level string) string) func(*Overload) string {
		return func(c *Overload) string {
			var parts []string
			for _, l := range []string{"global-default", "system", "certagent-node-certificates"} {
				parts = append(parts, f(c, l))
			}
			return strings.Join(parts, " / ")
		}
	}
	row("seats: global-default / system / certagent-node-certificates", levels(func(c *Overload, l string) string {
		if v, ok := c.Seats[l]; ok {
			return num(v)
		}
		return "—"
	}))
	row("mean APF queue wait: global-default / system / certagent-node-certificates", levels(func(c *Overload, l string) string {
		if w, ok := c.QueueWait[l]; ok {
			return fmt.Sprintf("%.1f ms", float64(w)/float64(time.Millisecond))
		}
		return "—"
	}))
	row("APF rejections by priority level (reason)", func(c *Overload) string { return countsText(c.Rejected) })
	row("dispatched by certagent's FlowSchemas", func(c *Overload) string {
		return countsText(map[string]float64{"bootstrap": c.Dispatched["certagent-bootstrap"], "node-certificates": c.Dispatched["certagent-node-certificates"]})
	})
	b.WriteString("\n")
}

// table writes the header of a markdown table with a column per element of
// cols, headed by heading, and returns what writes a row: a label, then f of
// each column.
func table[T any](b *strings.Builder, cols []T, heading func(T) string) (row func(label string, f func(T) string)) {
	b.WriteString("| |")
	for _, c := range cols {
		fmt.Fprintf(b, " %s |", heading(c))
	}
	b.WriteString("\n|---|" + strings.Repeat("---|", len(cols)) + "\n")
	return func(label string, f func(T) string) {
		fmt.Fprintf(b, "| %s |", label)
		for _, c := range cols {
			fmt.Fprintf(b, " %s |", f(c))
		}
		b.WriteString("\n")
	}
}

// waitText is "level 1.2 ms, …" (sorted).
func waitText(m map[string]time.Duration) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %.1f ms", k, float64(v)/float64(time.Millisecond)))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// countsText is "a 3, b 1" (sorted), "0" if empty.
func countsText(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %s", k, num(v)))
	}
	if len(parts) == 0 {
		return "0"
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// shortLimit is "QPS 20" for "default limit (QPS 20, burst 30)".
func shortLimit(text string) string {
	if _, rest, ok := strings.Cut(text, "("); ok {
		q, _, _ := strings.Cut(rest, ",")
		return q
	}
	return text
}

func kinds(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return " (" + strings.Join(parts, ", ") + ")"
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// num prints v with at most two decimals, none for a whole number.
func num(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

// probeUser is an ordinary user (not system:masters, so not exempt): API
// Priority and Fairness puts it in global-default, where bootstrap tokens land
// unless certagent's FlowSchema takes them.
const probeUser = "ops-probe"

// probePath is what the probe asks for: a small read, as an operator's
// kubectl get would.
const probePath = "/api/v1/namespaces/kube-system"

func (r *Report) joinTable(b *strings.Builder) {
	fmt.Fprintf(b, "## Joining by TPM attestation against the bootstrap token: %d nodes at once\n\n", r.Joins[0].N)
	b.WriteString("Each attested node has its own swtpm, enrolled by its EK hash, and no bootstrap kubeconfig; the service is `certagent-cluster serve` with the shipped RBAC. Serving certificate off in both. Requests per node from the audit log, the fleet's start to 10 s after the last node (or its last Event); the service account's are all of its requests in that window.\n\n")
	row := table(b, r.Joins, func(j *JoinRun) string {
		if len(r.Joins) > 2 {
			return fmt.Sprintf("%s (round %d)", j.Path, j.Round)
		}
		return j.Path
	})
	attestOnly := func(f func(*JoinRun) string) func(*JoinRun) string {
		return func(j *JoinRun) string {
			if j.Path != "attestation" {
				return "—"
			}
			return f(j)
		}
	}
	row("swtpm manufactured / started (not counted)", attestOnly(func(j *JoinRun) string { return secs(j.TPMManufacture) + " / " + secs(j.TPMStart) }))
	row("TPMEnrollments applied and in the service's cache (not counted)", attestOnly(func(j *JoinRun) string { return secs(j.Enroll) }))
	row("processes started in", func(j *JoinRun) string { return secs(j.Spawn) })
	row("kubelet.conf written, p50 / p99 / max", func(j *JoinRun) string { return j.Written.String() })
	for _, who := range []string{"the node's own", "the service account's", "the bootstrap token's"} {
		row("API requests per node, "+who, func(j *JoinRun) string {
			m := j.Requests[who]
			if len(m) == 0 {
				return "0"
			}
			return num(sum(m)) + ": " + countsText(m)
		})
	}
	row("client CSRs: exactly 1 per node (every node checked); requested by", func(j *JoinRun) string {
		var parts []string
		for k, v := range j.Requesters {
			parts = append(parts, fmt.Sprintf("%s %d", k, v))
		}
		sort.Strings(parts)
		return fmt.Sprintf("%v; %s", j.Exact, strings.Join(parts, ", "))
	})
	row("attestation service CPU per node", func(j *JoinRun) string { return fmt.Sprintf("%.1f ms", 1000*j.ServiceCPU) })
	row("kube-apiserver CPU per node", func(j *JoinRun) string { return fmt.Sprintf("%.1f ms", 1000*j.APIServerCPU) })
	row("the node's certagent CPU", func(j *JoinRun) string { return fmt.Sprintf("%.1f ms", 1000*j.NodeCPU) })
	row("the node's swtpm CPU (a real node's TPM is its own chip)", attestOnly(func(j *JoinRun) string { return fmt.Sprintf("%.1f ms", 1000*j.TPMCPU) }))
	row("service attempts (challenged, issued, refused)", attestOnly(func(j *JoinRun) string {
		return fmt.Sprintf("%.0f, %.0f, %.0f", j.Attempts["challenged"], j.Attempts["issued"], j.Attempts["refused"])
	}))
	row("failures: daemons exited, kubelet.conf not working", func(j *JoinRun) string { return fmt.Sprintf("%d, %d", j.Exited, j.Failures) })
	b.WriteString("\n")
}
