package packaging

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
)

// The rule files as Prometheus reads them (the fields these tests look at).
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Alert       string            `json:"alert"`
	Record      string            `json:"record"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// A promtool test rules file (the fields these tests look at).
type ruleTestFile struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			EvalTime  string `json:"eval_time"`
			Alertname string `json:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]any    `json:"exp_labels"`
				ExpAnnotations map[string]string `json:"exp_annotations"`
			} `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// alertSpec is what an alert must be: its severity, its for, and, for the
// kubernetes-mixin ones, the mixin's expression.
type alertSpec struct {
	name, severity, forDuration, expr string
}

// ruleFiles are the shipped rule files, each with the alerts it must hold (in
// order) and its promtool test file.
var ruleFiles = []struct {
	file, group, tests string
	alerts             []alertSpec
	// withLabels are the templates every alert's annotations must use.
	withLabels []string
}{
	{
		file: "certagent-alerts.yaml", group: "certagent", tests: "tests/certagent-alerts.test.yaml",
		withLabels: []string{"{{ $labels.instance }}", "{{ $labels.node }}"},
		alerts: []alertSpec{
			{name: "CertagentRenewalOverdue", severity: "warning"},
			{name: "CertagentCertificateExpiresSoon", severity: "critical"},
			{name: "CertagentRenewalFailing", severity: "warning", forDuration: "15m"},
			{name: "CertagentServingCSRPending", severity: "warning", forDuration: "30m"},
			{name: "CertagentCSRDenied", severity: "warning"},
			{name: "CertagentNotReady", severity: "critical", forDuration: "10m"},
			{name: "CertagentDown", severity: "critical", forDuration: "5m"},
			{name: "CertagentHookFailing", severity: "warning"},
		},
	},
	{
		file: "kubelet-certificate-alerts.yaml", group: "kubelet-certificates", tests: "tests/kubelet-certificate-alerts.test.yaml",
		withLabels: []string{"{{ $labels.node }}"},
		alerts: []alertSpec{
			{"KubeletClientCertificateExpiration", "warning", "", "kubelet_certificate_manager_client_ttl_seconds < 604800"},
			{"KubeletClientCertificateExpiration", "critical", "", "kubelet_certificate_manager_client_ttl_seconds < 86400"},
			{"KubeletServerCertificateExpiration", "warning", "", "kubelet_certificate_manager_server_ttl_seconds < 604800"},
			{"KubeletServerCertificateExpiration", "critical", "", "kubelet_certificate_manager_server_ttl_seconds < 86400"},
			{"KubeletClientCertificateRenewalErrors", "warning", "15m", "increase(kubelet_certificate_manager_client_expiration_renew_errors[5m]) > 0"},
			{"KubeletServerCertificateRenewalErrors", "warning", "15m", "increase(kubelet_server_expiration_renew_errors[5m]) > 0"},
		},
	},
}

func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestAlertRules checks each rule file holds the alerts it must, with their
// severity, for, a summary and a description that use the labels an operator
// needs, and only the series of the contract, used as their types allow.
func TestAlertRules(t *testing.T) {
	for _, rf := range ruleFiles {
		t.Run(rf.file, func(t *testing.T) {
			var f ruleFile
			readYAML(t, repo("packaging", "prometheus", rf.file), &f)
			if len(f.Groups) != 1 || f.Groups[0].Name != rf.group {
				t.Fatalf("want one group %q, have %d", rf.group, len(f.Groups))
			}
			rules := f.Groups[0].Rules
			if len(rules) != len(rf.alerts) {
				t.Errorf("%d rules, want %d", len(rules), len(rf.alerts))
			}
			for i, r := range rules {
				if i < len(rf.alerts) {
					want := rf.alerts[i]
					if r.Alert != want.name || r.Labels["severity"] != want.severity || r.For != want.forDuration {
						t.Errorf("rule %d is %s (severity %q, for %q), want %s (severity %q, for %q)",
							i, r.Alert, r.Labels["severity"], r.For, want.name, want.severity, want.forDuration)
					}
					if want.expr != "" && r.Expr != want.expr {
						t.Errorf("%s: expr %q, want kubernetes-mixin's %q", r.Alert, r.Expr, want.expr)
					}
				}
				if r.Record != "" || r.Alert == "" {
					t.Errorf("rule %d: only alerts belong here (record %q)", i, r.Record)
				}
				if len(r.Labels) != 1 {
					t.Errorf("%s: labels %v, want only severity", r.Alert, r.Labels)
				}
				summary, description := r.Annotations["summary"], r.Annotations["description"]
				if summary == "" || description == "" || len(r.Annotations) != 2 {
					t.Errorf("%s: annotations %v, want a summary and a description", r.Alert, sortedKeys(r.Annotations))
				}
				for _, l := range rf.withLabels {
					if !strings.Contains(summary+description, l) {
						t.Errorf("%s: the annotations do not use %s", r.Alert, l)
					}
				}
				for _, p := range checkSeries(r.Expr) {
					t.Errorf("%s: %s: %s", r.Alert, r.Expr, p)
				}
			}
		})
	}
}

// TestEveryAlertIsTested checks each rule file's test file loads it and has,
// for every alert and each of its severities, a case where it fires with the
// exact annotations, and for every alert a case where it does not fire.
func TestEveryAlertIsTested(t *testing.T) {
	for _, rf := range ruleFiles {
		t.Run(rf.tests, func(t *testing.T) {
			var f ruleTestFile
			readYAMLLoose(t, repo("packaging", "prometheus", rf.tests), &f)
			if len(f.RuleFiles) != 1 || filepath.Base(f.RuleFiles[0]) != rf.file {
				t.Errorf("rule_files %v, want ../%s", f.RuleFiles, rf.file)
			}
			fires := map[string]bool{} // name/severity
			quiet := map[string]bool{} // name
			for _, tc := range f.Tests {
				for _, c := range tc.AlertRuleTest {
					if len(c.ExpAlerts) == 0 {
						quiet[c.Alertname] = true
					}
					for _, a := range c.ExpAlerts {
						sev, _ := a.ExpLabels["severity"].(string)
						fires[c.Alertname+"/"+sev] = true
						if a.ExpAnnotations["summary"] == "" || a.ExpAnnotations["description"] == "" {
							t.Errorf("%q at %s: %s fires without the exact summary and description expected",
								tc.Name, c.EvalTime, c.Alertname)
						}
					}
				}
			}
			for _, a := range rf.alerts {
				if !fires[a.name+"/"+a.severity] {
					t.Errorf("no case where %s fires with severity %s", a.name, a.severity)
				}
				if !quiet[a.name] {
					t.Errorf("no case where %s does not fire", a.name)
				}
			}
		})
	}
	matches, err := filepath.Glob(repo("packaging", "prometheus", "tests", "*.yaml"))
	if err != nil || len(matches) != len(ruleFiles) {
		t.Errorf("packaging/prometheus/tests holds %v, want one test file per rule file", matches)
	}
}

// readYAMLLoose reads a promtool test file, of which the tests look at a part.
func readYAMLLoose(t *testing.T, path string, into any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
