package fleet

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/packaging"
)

var (
	flagOverloadN    = flag.Int("fleet.overload.n", envInt("FLEET_OVERLOAD_N", 0), "nodes in each fleet of the overload comparison (default $FLEET_OVERLOAD_N, else -fleet.n)")
	flagInflight     = flag.Int("fleet.overload.inflight", 20, "the API server's --max-requests-inflight in the overload comparison (its default: 400)")
	flagMutating     = flag.Int("fleet.overload.mutating", 10, "the API server's --max-mutating-requests-inflight in the overload comparison (its default: 200)")
	flagDefaultFirst = flag.Bool("fleet.overload.default-first", false, "run the default configuration first (else the shipped one is first: a warmed-up control plane favours the default)")
	flagProbeRate    = flag.Float64("fleet.overload.probe-rate", 10, "the probe user's requests per second")
)

// flowControlManifest is what the package ships as
// /usr/share/certagent/flowcontrol/certagent-flowcontrol.yaml.
var flowControlManifest = filepath.Join("..", "..", packaging.FlowControlManifest)

// The two runs of the overload comparison.
const (
	apfShipped = "with certagent-flowcontrol.yaml"
	apfDefault = "default APF"
)

// overloadIdle is how long the probe runs alone before each fleet starts.
const overloadIdle = 3 * time.Second

// probeUser is an ordinary user (not system:masters, so not exempt): API
// Priority and Fairness puts it in global-default, where bootstrap tokens land
// unless certagent's FlowSchema takes them.
const probeUser = "ops-probe"

// probePath is what the probe asks for: a small read, as an operator's
// kubectl get would.
const probePath = "/api/v1/namespaces/kube-system"

// TestOverload starts N certagent daemons at once against an API server whose
// concurrency is lowered (-fleet.overload.inflight and .mutating, 20 and 10:
// 30 seats shared by every priority level instead of 600) so that a scale-up
// overloads it on this machine, while an ordinary user (probeUser) reads
// probePath at a steady rate without client-side retries. Once with
// packaging/flowcontrol/certagent-flowcontrol.yaml applied, read and applied
// as shipped, then, after it is deleted again, with the default API Priority
// and Fairness configuration, on the same control plane. Every node must end
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
		if _, err := c.client.FlowcontrolV1().PriorityLevelConfigurations().Get(context.Background(), level, metav1.GetOptions{}); err == nil {
			o.Seats[level] = seats[level]
		}
		if n := waits[level+"_count"]; n > 0 {
			o.QueueWait[level] = time.Duration(waits[level+"_sum"] / n * float64(time.Second))
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

// probeConfig makes probeUser, allowed to get namespaces and nothing else.
func probeConfig(t *testing.T, c *cluster) *rest.Config {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "fleet:" + probeUser},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}},
	}
	if _, err := c.client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "fleet:" + probeUser},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: probeUser}},
	}
	if _, err := c.client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.UserConfig(probeUser)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // the server, not client-go, must be what slows it
	return cfg
}

// applyFlowControl creates the shipped manifest's objects through the admin
// client, as kubectl apply -f does, and returns what deletes them again.
func applyFlowControl(t *testing.T, c *cluster) (undo func()) {
	t.Helper()
	ctx := context.Background()
	fc := c.client.FlowcontrolV1()
	objs, err := packaging.ReadManifest(flowControlManifest)
	if err != nil {
		t.Fatal(err)
	}
	var deletes []func() error
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *flowcontrolv1.PriorityLevelConfiguration:
			_, err = fc.PriorityLevelConfigurations().Create(ctx, o, metav1.CreateOptions{})
			deletes = append(deletes, func() error { return fc.PriorityLevelConfigurations().Delete(ctx, o.Name, metav1.DeleteOptions{}) })
		case *flowcontrolv1.FlowSchema:
			_, err = fc.FlowSchemas().Create(ctx, o, metav1.CreateOptions{})
			deletes = append(deletes, func() error { return fc.FlowSchemas().Delete(ctx, o.Name, metav1.DeleteOptions{}) })
		default:
			t.Fatalf("%s holds a %T: only PriorityLevelConfigurations and FlowSchemas belong there", flowControlManifest, obj)
		}
		if err != nil {
			t.Fatalf("applying %s: %v", flowControlManifest, err)
		}
	}
	return func() {
		for i := len(deletes) - 1; i >= 0; i-- {
			if err := deletes[i](); err != nil {
				t.Errorf("deleting what %s created: %v", flowControlManifest, err)
			}
		}
	}
}

// waitClassified asks the API server with cfg (a list of CSRs) until the
// FlowSchema it names in its answer (X-Kubernetes-PF-FlowSchema-UID) is
// want, for up to a minute.
func waitClassified(t *testing.T, c *cluster, cfg *rest.Config, who, want string) {
	t.Helper()
	ctx := context.Background()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	var got string
	for time.Now().Before(deadline) {
		fs, err := c.client.FlowcontrolV1().FlowSchemas().Get(ctx, want, metav1.GetOptions{})
		if err == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/apis/certificates.k8s.io/v1/certificatesigningrequests?limit=1", nil)
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if got = resp.Header.Get("X-Kubernetes-PF-FlowSchema-UID"); got == string(fs.UID) {
					return
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("requests by %s did not meet FlowSchema %s within a minute (the last answer named UID %q)", who, want, got)
}

// probe is an ordinary user's steady stream of reads: one request every
// 1/rate seconds, each in its own goroutine (an open loop: a slow answer does
// not slow the stream), without client-go's retries, so every 429 is seen.
type probe struct {
	client  kubernetes.Interface
	stopped chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	samples []probeSample
}

type probeSample struct {
	at   time.Time
	took time.Duration
	code int // 0: no answer
	err  error
}

func startProbe(t *testing.T, cfg *rest.Config, rate float64) *probe {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{client: cs, stopped: make(chan struct{})}
	if s := p.ask(); s.code != http.StatusOK { // the connection, and the permission
		t.Fatalf("the probe's first request: %d %v", s.code, s.err)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer tick.Stop()
		for {
			select {
			case <-p.stopped:
				return
			case <-tick.C:
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					s := p.ask()
					p.mu.Lock()
					p.samples = append(p.samples, s)
					p.mu.Unlock()
				}()
			}
		}
	}()
	return p
}

func (p *probe) ask() probeSample {
	s := probeSample{at: time.Now()}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.err = p.client.CoreV1().RESTClient().Get().AbsPath(probePath).MaxRetries(0).Do(ctx).StatusCode(&s.code).Error()
	s.took = time.Since(s.at)
	return s
}

// halt stops the stream and waits for the requests under way.
func (p *probe) halt() {
	p.once.Do(func() { close(p.stopped) })
	p.wg.Wait()
}

// stats covers the requests started in [from, to): the latency of those
// answered 200, how many there were, and how many were answered 429 or
// failed otherwise.
func (p *probe) stats(from, to time.Time) (ok Dist, requests, throttled, failed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var took []time.Duration
	for _, s := range p.samples {
		if s.at.Before(from) || !s.at.Before(to) {
			continue
		}
		requests++
		switch s.code {
		case http.StatusOK:
			took = append(took, s.took)
		case http.StatusTooManyRequests:
			throttled++
		default:
			failed++
		}
	}
	return NewDist(took), requests, throttled, failed
}

func (p *probe) firstError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.samples {
		if s.code != http.StatusOK && s.code != http.StatusTooManyRequests {
			return fmt.Errorf("%d: %v", s.code, s.err)
		}
	}
	return nil
}

var metricLabel = regexp.MustCompile(`(\w+)="([^"]*)"`)

// apfCounts reads the API server's API Priority and Fairness figures
// (/metrics, as the admin): requests rejected by priority level (and
// reason: queue-full, time-out, …), dispatched by FlowSchema, the time
// requests waited in queues by priority level ("<level>_sum" in seconds and
// "<level>_count"), and the seats each level has ("<level>").
func apfCounts(t *testing.T, c *cluster) (rejected, dispatched, wait, seats map[string]float64) {
	t.Helper()
	data, err := c.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("reading the API server's metrics: %v", err)
	}
	rejected, dispatched, wait, seats = map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !strings.HasPrefix(name, "apiserver_flowcontrol_") {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if !ok || err != nil {
			continue
		}
		l := map[string]string{}
		for _, m := range metricLabel.FindAllStringSubmatch(labels, -1) {
			l[m[1]] = m[2]
		}
		switch name {
		case "apiserver_flowcontrol_rejected_requests_total":
			rejected[l["priority_level"]+" ("+l["reason"]+")"] += v
		case "apiserver_flowcontrol_dispatched_requests_total":
			dispatched[l["flow_schema"]] += v
		case "apiserver_flowcontrol_request_wait_duration_seconds_sum", "apiserver_flowcontrol_request_wait_duration_seconds_count":
			// Only the requests that went on to execute.
			if l["execute"] == "true" {
				wait[l["priority_level"]+strings.TrimPrefix(name, "apiserver_flowcontrol_request_wait_duration_seconds")] += v
			}
		case "apiserver_flowcontrol_nominal_limit_seats":
			seats[l["priority_level"]] = v
		}
	}
	return rejected, dispatched, wait, seats
}

// diffCounts is after - before, leaving out what did not change.
func diffCounts(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}
