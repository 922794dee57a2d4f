package command

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestMain_(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{nil, 2, "Usage:"},
		{[]string{"version"}, 0, "certagent-cluster dev"},
		{[]string{"help"}, 0, "init-tls"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"serve", "--log-format", "xml", "--kubeconfig", "/nonexistent"}, 2, "--log-format"},
		{[]string{"serve", "extra"}, 2, "unexpected arguments"},
		{[]string{"serve", "--kubeconfig", "/nonexistent"}, 1, "connecting to the API server"},
		{[]string{"init-tls", "-o", "yaml"}, 2, "-o"},
		{[]string{"approve", "--dns-suffix", ".example.com"}, 2, "leading dot"},
		{[]string{"approve", "extra"}, 2, "unexpected arguments"},
		{[]string{"approve", "--kubeconfig", "/nonexistent"}, 1, "connecting to the API server"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := Main(tc.args, &stdout, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, stderr.String())
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.out) {
				t.Errorf("output %q does not contain %q", out, tc.out)
			}
		})
	}
}

func TestParseServe(t *testing.T) {
	cfg, f, err := parseServe([]string{"--listen", ":9443", "--max-expiration", "24h", "--manufacturer-roots", "/etc/roots.pem", "--kube-api-qps", "5"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != ":9443" || cfg.HealthListen != ":8080" || cfg.MaxExpiration != 24*time.Hour ||
		cfg.ManufacturerRoots != "/etc/roots.pem" || cfg.TLSCertFile != "/etc/certagent-cluster/tls/tls.crt" ||
		cfg.IssueTimeout != 20*time.Second || f.qps != 5 || f.burst != 100 || f.logFormat != "json" {
		t.Errorf("parsed %+v %+v", cfg, f)
	}
}

func TestParseApprove(t *testing.T) {
	cfg, f, err := parseApprove([]string{"--dns-suffix", "a.example.com,b.example.com", "--max-duration", "720h", "--deny", "--kubeconfig", "/k"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Policy.DNSSuffixes, " ") != "a.example.com b.example.com" || cfg.Policy.MaxExpiration != 720*time.Hour ||
		!cfg.Deny || cfg.HealthListen != ":8080" || f.kubeconfig != "/k" || f.logFormat != "json" {
		t.Errorf("parsed %+v %+v", cfg, f)
	}
}
