package approver

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// scrapeValue is the value of the sample line (name and labels exactly as
// exposed) on the shared approver's /metrics; the test fails if it is absent.
func scrapeValue(t *testing.T, sample string) float64 {
	t.Helper()
	rsp, err := http.Get("http://" + shared.Health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	body, err := io.ReadAll(rsp.Body)
	if err != nil || rsp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s %v", rsp.Status, err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("/metrics has no %s", sample)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestApproverServesDecisionMetrics: each decision the running approver
// acts on is counted by result and rule on /metrics, and timed.
func TestApproverServesDecisionMetrics(t *testing.T) {
	const (
		approved = `certagent_approver_decisions_total{reason="NodeOwnsEveryName",result="approve"}`
		refused  = `certagent_approver_decisions_total{reason="IPNotNodeAddress",result="refuse"}`
		timed    = `certagent_approver_decision_duration_seconds_count{result="approve"}`
	)
	before := map[string]float64{approved: scrapeValue(t, approved), refused: scrapeValue(t, refused), timed: scrapeValue(t, timed)}
	makeNode(t, "ap-metrics", "InternalIP=10.88.8.1")
	node := asNode(t, "ap-metrics")
	good, _ := postCSR(t, node, request{cn: "system:node:ap-metrics", dns: []string{"ap-metrics"}, ips: []string{"10.88.8.1"}})
	if c, _ := waitCondition(t, good, 20*time.Second); c.Type != certificatesv1.CertificateApproved {
		t.Fatalf("condition %s %s %q", c.Type, c.Reason, c.Message)
	}
	bad, _ := postCSR(t, node, request{cn: "system:node:ap-metrics", ips: []string{"10.88.8.9"}})
	waitEvent(t, bad, "IPNotNodeAddress")
	for sample, was := range before {
		if now := scrapeValue(t, sample); now < was+1 {
			t.Errorf("%s: %v before, %v after a decision of its kind", sample, was, now)
		}
	}
}
