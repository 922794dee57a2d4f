package packaging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Debian's prometheus package (make rules-deps) installs both.
const (
	promtoolBin   = "/usr/bin/promtool"
	prometheusBin = "/usr/bin/prometheus"
)

// needBinary fails the test, never skips it, when bin is not installed.
func needBinary(t *testing.T, bin string) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is not installed (%v): make rules-deps installs it (apt-get install prometheus)", bin, err)
	}
}

func runPromtool(t *testing.T, args ...string) (string, error) {
	t.Helper()
	needBinary(t, promtoolBin)
	out, err := exec.Command(promtoolBin, args...).CombinedOutput()
	return string(out), err
}

func mustPromtool(t *testing.T, args ...string) {
	t.Helper()
	out, err := runPromtool(t, args...)
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func absRepo(t *testing.T, elem ...string) string {
	t.Helper()
	p, err := filepath.Abs(repo(elem...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPromtoolCheckRules(t *testing.T) {
	args := []string{"check", "rules"}
	for _, rf := range ruleFiles {
		args = append(args, absRepo(t, "packaging", "prometheus", rf.file))
	}
	mustPromtool(t, args...)
}

func TestPromtoolTestRules(t *testing.T) {
	tests, err := filepath.Glob(absRepo(t, "packaging", "prometheus", "tests", "*.yaml"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no promtool tests in packaging/prometheus/tests (%v)", err)
	}
	mustPromtool(t, append([]string{"test", "rules"}, tests...)...)
}

// TestPromtoolCheckDashboardQueries has Prometheus' parser check every query
// of the dashboard: each becomes a recording rule (Grafana's variables
// replaced by values) in a rule file that promtool checks.
func TestPromtoolCheckDashboardQueries(t *testing.T) {
	d, _ := readDashboard(t)
	exprs := dashboardExprs(t, d)
	names := make([]string, 0, len(exprs))
	for where := range exprs {
		names = append(names, where)
	}
	sort.Strings(names)
	ranges := regexp.MustCompile(`\$__(rate_interval|interval|range)\b`)
	vars := regexp.MustCompile(`\$(\{\w+\}|\w+)`)
	var b bytes.Buffer
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for i, where := range names {
		expr := vars.ReplaceAllString(ranges.ReplaceAllString(exprs[where], "5m"), ".*")
		fmt.Fprintf(&b, "      # %s\n      - record: dashboard:query_%d\n        expr: ", where, i)
		if err := enc.Encode(expr); err != nil { // a JSON string is a YAML double-quoted one
			t.Fatal(err)
		}
	}
	rules := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(rules, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	mustPromtool(t, "check", "rules", rules)
}

// scrapeExample is packaging/prometheus/scrape.yaml: a scrape_configs section.
func scrapeExample(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(repo("packaging", "prometheus", "scrape.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// wrapConfig writes a minimal prometheus.yml into dir: a global section, the
// shipped rule files and scrapeConfigs (a scrape_configs section).
func wrapConfig(t *testing.T, dir, scrapeConfigs string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\nrule_files:\n")
	for _, rf := range ruleFiles {
		fmt.Fprintf(&b, "  - %q\n", absRepo(t, "packaging", "prometheus", rf.file))
	}
	b.WriteString(scrapeConfigs)
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubernetesSD is the example's service discovery, which fileSD replaces.
const kubernetesSD = "    kubernetes_sd_configs:\n      - role: node\n"

// fileSD replaces the example's Kubernetes node discovery by file discovery
// of nodesFile. Debian builds Prometheus without Kubernetes discovery; the
// relabelling, which is what the example adds, sees the same labels.
func fileSD(t *testing.T, scrape, nodesFile string) string {
	t.Helper()
	if strings.Count(scrape, kubernetesSD) != 1 {
		t.Fatalf("scrape.yaml should discover nodes with exactly one\n%s", kubernetesSD)
	}
	return strings.Replace(scrape, kubernetesSD, fmt.Sprintf("    file_sd_configs:\n      - files: [%q]\n", nodesFile), 1)
}

// discoveredNodes are three nodes as Kubernetes node discovery reports them
// (__address__ is the kubelet's): IPv4, IPv6, and one with no InternalIP.
const discoveredNodes = `[
  {"targets": ["10.0.0.11:10250"], "labels": {"__meta_kubernetes_node_name": "node-1",
    "__meta_kubernetes_node_address_InternalIP": "10.0.0.11", "__meta_kubernetes_node_address_Hostname": "node-1"}},
  {"targets": ["[fd00::12]:10250"], "labels": {"__meta_kubernetes_node_name": "node-2",
    "__meta_kubernetes_node_address_InternalIP": "fd00::12", "__meta_kubernetes_node_address_Hostname": "node-2"}},
  {"targets": ["203.0.113.3:10250"], "labels": {"__meta_kubernetes_node_name": "node-3",
    "__meta_kubernetes_node_address_ExternalIP": "203.0.113.3"}}
]
`

func writeNodes(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "nodes.json")
	if err := os.WriteFile(path, []byte(discoveredNodes), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPromtoolCheckScrapeConfig checks the scrape example, and the static
// alternative in its comment, with promtool check config, each wrapped in a
// prometheus.yml that loads the shipped rule files.
func TestPromtoolCheckScrapeConfig(t *testing.T) {
	scrape := scrapeExample(t)
	t.Run("kubernetes node discovery", func(t *testing.T) {
		dir := t.TempDir()
		out, err := runPromtool(t, "check", "config", wrapConfig(t, dir, scrape))
		if err != nil && strings.Contains(out, "field kubernetes_sd_configs not found") {
			t.Logf("%s is built without Kubernetes service discovery (Debian's is); checking the example with file discovery in its place", promtoolBin)
			mustPromtool(t, "check", "config", wrapConfig(t, dir, fileSD(t, scrape, writeNodes(t, dir))))
			return
		}
		if err != nil {
			t.Fatalf("promtool check config: %v\n%s", err, out)
		}
		t.Log(out)
	})
	t.Run("static alternative", func(t *testing.T) {
		// The commented job: from "#  - job_name: certagent" to the end of the comment.
		lines := strings.Split(scrape, "\n")
		var job []string
		for i, l := range lines {
			if strings.HasPrefix(l, "#  - job_name: certagent") {
				for _, l := range lines[i:] {
					if !strings.HasPrefix(l, "#") {
						break
					}
					job = append(job, strings.TrimPrefix(l, "#"))
				}
				break
			}
		}
		if len(job) < 3 || !strings.Contains(strings.Join(job, "\n"), "static_configs:") {
			t.Fatalf("scrape.yaml has no commented static_configs job starting with \"#  - job_name: certagent\" (found %q)", job)
		}
		mustPromtool(t, "check", "config", wrapConfig(t, t.TempDir(), "scrape_configs:\n"+strings.Join(job, "\n")+"\n"))
	})
}

// TestScrapeRelabelling runs Prometheus with the scrape example on nodes as
// Kubernetes discovery reports them and checks the targets it makes: each
// node's InternalIP on port 10271 (IPv6 in brackets), job certagent, a node
// label with the node's name, and no target for a node without an InternalIP.
func TestScrapeRelabelling(t *testing.T) {
	needBinary(t, prometheusBin)
	dir := t.TempDir()
	cfg := wrapConfig(t, dir, fileSD(t, scrapeExample(t), writeNodes(t, dir)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var logs bytes.Buffer
	cmd := exec.Command(prometheusBin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	type target struct {
		DiscoveredLabels map[string]string `json:"discoveredLabels"`
		Labels           map[string]string `json:"labels"`
		ScrapeURL        string            `json:"scrapeUrl"`
	}
	var resp struct {
		Data struct {
			Active  []target `json:"activeTargets"`
			Dropped []target `json:"droppedTargets"`
		} `json:"data"`
	}
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		if r, err := client.Get("http://" + addr + "/api/v1/targets?state=any"); err == nil {
			err = json.NewDecoder(r.Body).Decode(&resp)
			r.Body.Close()
			if err == nil && len(resp.Data.Active)+len(resp.Data.Dropped) == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus did not report the 3 discovered nodes within a minute (have %+v)\n%s", resp.Data, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	want := map[string]target{
		"node-1": {Labels: map[string]string{"instance": "10.0.0.11:10271", "job": "certagent", "node": "node-1"},
			ScrapeURL: "http://10.0.0.11:10271/metrics"},
		"node-2": {Labels: map[string]string{"instance": "[fd00::12]:10271", "job": "certagent", "node": "node-2"},
			ScrapeURL: "http://[fd00::12]:10271/metrics"},
	}
	for _, got := range resp.Data.Active {
		node := got.DiscoveredLabels["__meta_kubernetes_node_name"]
		w, ok := want[node]
		if !ok {
			t.Errorf("a target for %q: %+v", node, got)
			continue
		}
		delete(want, node)
		if fmt.Sprint(got.Labels) != fmt.Sprint(w.Labels) || got.ScrapeURL != w.ScrapeURL {
			t.Errorf("%s: target labels %v, scrape URL %s; want %v, %s", node, got.Labels, got.ScrapeURL, w.Labels, w.ScrapeURL)
		}
	}
	for node := range want {
		t.Errorf("no target for %s", node)
	}
	if len(resp.Data.Dropped) != 1 || resp.Data.Dropped[0].DiscoveredLabels["__meta_kubernetes_node_name"] != "node-3" {
		t.Errorf("dropped targets %+v, want node-3 (it has no InternalIP)", resp.Data.Dropped)
	}
	t.Logf("targets as expected, node-3 dropped (prometheus on %s)", addr)
}
