package fleet

// API Priority and Fairness for TestOverload: the shipped configuration
// applied and undone, the classification checked, the API server's figures read.

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/test/packaging"
)

// flowControlManifest is what the package ships as
// /usr/share/certagent/flowcontrol/certagent-flowcontrol.yaml.
var flowControlManifest = filepath.Join("..", "..", packaging.FlowControlManifest)

// applyFlowControl creates the shipped manifest's objects through the admin
// client, as kubectl apply -f does, and returns what deletes them again.
func applyFlowControl(t *testing.T, c *cluster) (undo func()) {
	t.Helper()
	ctx := context.Background()
	fc := c.api().FlowcontrolV1()
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
		fs, err := c.api().FlowcontrolV1().FlowSchemas().Get(ctx, want, metav1.GetOptions{})
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

var metricLabel = regexp.MustCompile(`(\w+)="([^"]*)"`)

// apfCounts reads the API server's API Priority and Fairness figures
// (/metrics, as the admin): requests rejected by priority level (and
// reason: queue-full, time-out, …), dispatched by FlowSchema, the time
// requests waited in queues by priority level ("<level>_sum" in seconds and
// "<level>_count"), and the seats each level has ("<level>").
func apfCounts(t *testing.T, c *cluster) (rejected, dispatched, wait, seats map[string]float64) {
	t.Helper()
	data, err := c.api().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
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
