package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certagent/certagent/internal/syncbuf"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certagent/certagent/test/controlplane"
	"github.com/certagent/certagent/test/packaging"
)

// The operator's view (docs/metrics.md): a real Prometheus scraping a real
// certagent with the shipped alert rules, and the Events on the Node seen
// through kubectl.

const prometheusBin = "/usr/bin/prometheus"

// prometheus runs Debian's Prometheus scraping target every second with the
// rule files the package ships, and returns its base URL.
func startPrometheus(t *testing.T, target, nodeName string) string {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		t.Fatalf("%s: %v (make rules-deps installs Debian's prometheus package)", prometheusBin, err)
	}
	rules, err := filepath.Abs("../../packaging/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %s/certagent-alerts.yaml
  - %s/kubelet-certificate-alerts.yaml
scrape_configs:
  - job_name: certagent
    static_configs:
      - targets: [%q]
        labels: {node: %q}
`, rules, rules, target, nodeName)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(prometheusBin, "--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"), "--web.listen-address", addr)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", out.String())
		}
	})
	base := "http://" + addr
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		if c, _ := httpGetNoFatal(base + "/-/ready"); c == 200 {
			return base
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after a minute:\n%s", out.String())
		}
	}
}

// httpGetNoFatal is httpGet that reports a failed request as code -1.
func httpGetNoFatal(u string) (int, string) {
	resp, err := http.Get(u)
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// promQuery evaluates expr now and returns the samples' values by the value
// of label (or "" for all).
func promQuery(t *testing.T, base, expr, label string) map[string]float64 {
	t.Helper()
	code, body := httpGetNoFatal(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if code != 200 {
		t.Fatalf("query %s: %d %s", expr, code, body)
	}
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		v, err := strconv.ParseFloat(s.Value[1].(string), 64)
		if err != nil {
			t.Fatalf("query %s: value %v", expr, s.Value)
		}
		out[s.Metric[label]] = v
	}
	return out
}

// firingAlerts returns the firing alerts' label sets.
func firingAlerts(t *testing.T, base string) []map[string]string {
	t.Helper()
	code, body := httpGetNoFatal(base + "/api/v1/alerts")
	if code != 200 {
		t.Fatalf("alerts: %d %s", code, body)
	}
	var r struct {
		Data struct {
			Alerts []struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
				State       string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	for _, a := range r.Data.Alerts {
		if a.State == "firing" {
			l := a.Labels
			l["description"] = a.Annotations["description"]
			out = append(out, l)
		}
	}
	return out
}

// TestPrometheusSeesCertagent: Prometheus scrapes a daemon (its own parser
// accepts the exposition: up is 1); the kubelet-compatible TTL series equal
// the certificates on disk, and the kubernetes-mixin kubelet certificate
// alerts fire from them; no alert about a failing agent fires on a healthy
// node; a serving CSR denied by a person fires CertagentCSRDenied for that
// node.
func TestPrometheusSeesCertagent(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("metrics:\n  address: 127.0.0.1:0\n")
	ns := newNotifySocket(t)
	p := n.startDaemon(ns)
	approve, stop := context.WithCancel(context.Background())
	go n.approver(approve)
	ns.WaitFor(t, "READY=1", func(m string) bool { return strings.Contains(m, "READY=1") }, time.Minute)
	for n.current("kubelet-server") == nil {
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	prom := startPrometheus(t, p.httpAddr(t), n.name)

	waitProm(t, "a scrape", func() bool { return promQuery(t, prom, `up{job="certagent"}`, "node")[n.name] == 1 })
	// Every series the shipped rules and dashboard use is exported, with its type.
	_, body := httpGet(t, "http://"+p.httpAddr(t)+"/metrics")
	for name, typ := range packaging.Contract {
		if name != "up" && !strings.Contains(body, "\n# TYPE "+name+" "+typ+"\n") {
			t.Errorf("/metrics lacks %s of type %s, which the rules or the dashboard use", name, typ)
		}
	}
	for _, c := range []struct{ series, prefix string }{
		{"kubelet_certificate_manager_client_ttl_seconds", "kubelet-client"},
		{"kubelet_certificate_manager_server_ttl_seconds", "kubelet-server"},
	} {
		// TTL + the scrape's time = NotAfter, to the second (the TTL is
		// whole seconds, as the kubelet's).
		got := promQuery(t, prom, c.series+" + timestamp("+c.series+")", "node")[n.name]
		want := float64(n.current(c.prefix).NotAfter.Unix())
		if math.Abs(got-want) > 2 {
			t.Errorf("%s + scrape time = %.0f, the certificate on disk expires at %.0f", c.series, got, want)
		}
		t.Logf("%s: Prometheus sees NotAfter %s; %s on disk says %s", c.series, time.Unix(int64(got), 0).UTC(), c.prefix, time.Unix(int64(want), 0).UTC())
	}
	// The test signer issues 24-hour certificates: the kubernetes-mixin
	// rules clusters already run (KubeletClient/ServerCertificateExpiration,
	// critical under a day) fire from certagent's scrape, for this node. The
	// rules about a failing agent do not.
	waitProm(t, "the kubelet expiry alerts", func() bool {
		got := map[string]bool{}
		for _, a := range firingAlerts(t, prom) {
			if a["node"] == n.name && a["severity"] == "critical" {
				got[a["alertname"]] = true
			}
		}
		return got["KubeletClientCertificateExpiration"] && got["KubeletServerCertificateExpiration"]
	})
	time.Sleep(3 * time.Second) // a few more evaluations
	for _, a := range firingAlerts(t, prom) {
		switch a["alertname"] {
		case "KubeletClientCertificateExpiration", "KubeletServerCertificateExpiration", "CertagentCertificateExpiresSoon":
		default:
			t.Errorf("%s fires on a healthy node: %v", a["alertname"], a)
		}
	}

	// A person denies the next serving CSR (renew --force asks the daemon
	// for new certificates; it waits for them, so it runs in the background).
	renew := exec.Command(certagentBin, append([]string{"renew", "--force"}, n.args()[1:]...)...)
	if err := renew.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = renew.Process.Kill(); _ = renew.Wait() })
	csr := n.waitForPendingCSR(certificatesv1.KubeletServingSignerName, time.Minute)
	if err := cp.DenyCSR(context.Background(), csr, "NotOurNode", "the IP address is not this node's"); err != nil {
		t.Fatal(err)
	}
	var fired map[string]string
	waitProm(t, "CertagentCSRDenied", func() bool {
		for _, a := range firingAlerts(t, prom) {
			if a["alertname"] == "CertagentCSRDenied" && a["node"] == n.name && a["certificate"] == "server" {
				fired = a
				return true
			}
		}
		return false
	})
	t.Logf("fired: %v", fired)
}

// waitProm polls cond for up to a minute.
func waitProm(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Prometheus: no %s after a minute", what)
		}
	}
}

// waitForPendingCSR waits for a CSR of signer with no condition yet.
func (n *node) waitForPendingCSR(signer string, timeout time.Duration) string {
	n.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		list, err := n.listCSRs(signer)
		if err != nil {
			n.t.Fatal(err)
		}
		for _, c := range list {
			if len(c.Status.Conditions) == 0 {
				return c.Name
			}
		}
	}
	n.t.Fatalf("no pending %s CSR after %s", signer, timeout)
	return ""
}

// kubectl runs kubectl (built once into the cache) as the cluster admin.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := controlplane.EnsureKubectl(context.Background(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, append([]string{"--kubeconfig", cp.AdminKubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// nodeEvents is `kubectl get events` for the node, by reason.
func nodeEvents(t *testing.T, node string) map[string][]map[string]any {
	t.Helper()
	var list struct {
		Items []map[string]any `json:"items"`
	}
	out := kubectl(t, "get", "events", "-n", "default", "--field-selector", "involvedObject.kind=Node,involvedObject.name="+node, "-o", "json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl get events -o json: %v\n%s", err, out)
	}
	by := map[string][]map[string]any{}
	for _, e := range list.Items {
		r, _ := e["reason"].(string)
		by[r] = append(by[r], e)
	}
	return by
}

// TestEventsThroughKubectl: what an operator sees with kubectl get events
// for a node certagent bootstraps: the client certificate issued (with its
// NotAfter, and the bootstrap kubeconfig removed), the serving CSR waiting
// (with the approve command, once it has waited 15 s), then denied (by whom
// and why), all written by the node itself (the audit log).
func TestEventsThroughKubectl(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("metrics:\n  address: \"\"\n")
	ns := newNotifySocket(t)
	n.startDaemon(ns)
	csr := n.waitForPendingCSR(certificatesv1.KubeletServingSignerName, time.Minute)
	var by map[string][]map[string]any
	waitEvents := func(reasons ...string) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
			by = nodeEvents(t, n.name)
			missing := ""
			for _, r := range reasons {
				if len(by[r]) == 0 {
					missing = r
				}
			}
			if missing == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s event after a minute; kubectl get events shows:\n%s", missing, kubectl(t, "get", "events", "-n", "default"))
			}
		}
	}
	waitEvents("CertificateIssued", "ServingCSRPending")
	msg := func(reason string) string { m, _ := by[reason][0]["message"].(string); return m }
	client := n.current("kubelet-client")
	if want := client.NotAfter.UTC().Format("2006-01-02 15:04Z"); !strings.Contains(msg("CertificateIssued"), "valid until "+want) {
		t.Errorf("CertificateIssued says %q, want NotAfter %s", msg("CertificateIssued"), want)
	}
	if !strings.Contains(msg("CertificateIssued"), "removed the bootstrap kubeconfig "+n.bootstrap) {
		t.Errorf("CertificateIssued says %q, want the bootstrap kubeconfig %s removed", msg("CertificateIssued"), n.bootstrap)
	}
	if !strings.Contains(msg("ServingCSRPending"), "kubectl certificate approve "+csr) {
		t.Errorf("ServingCSRPending says %q, want the approve command for %s", msg("ServingCSRPending"), csr)
	}
	if err := cp.DenyCSR(context.Background(), csr, "NotOurNode", "the IP address is not this node's"); err != nil {
		t.Fatal(err)
	}
	waitEvents("CSRDenied")
	d := by["CSRDenied"][0]
	if d["type"] != "Warning" || !strings.Contains(msg("CSRDenied"), `reason "NotOurNode": the IP address is not this node's`) || !strings.Contains(msg("CSRDenied"), csr) {
		t.Errorf("CSRDenied: %v %q", d["type"], msg("CSRDenied"))
	}
	table := kubectl(t, "get", "events", "-n", "default", "--field-selector", "involvedObject.name="+n.name)
	t.Logf("kubectl get events --field-selector involvedObject.name=%s:\n%s", n.name, table)

	reqs, err := cp.RequestsBy("system:node:"+n.name, time.Time{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	creates := 0
	for _, r := range reqs {
		if r.Verb == "create" && strings.Contains(r.RequestURI, "/events") {
			creates++
		}
	}
	if creates < 3 {
		t.Errorf("the audit log shows %d event creates by system:node:%s, want the 3 events above written by the node", creates, n.name)
	}
}
