package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		wantErr string
		check   func(t *testing.T, c Config)
	}{
		{"full", `apiVersion: certagent.io/v1alpha1
kind: AgentConfig
nodeName: node-1
certDir: /srv/pki
timeout: 30s
serving:
  enabled: false
  dnsNames: [a.example]
  ipAddresses: [10.1.2.3]
rotation:
  requestedDuration: 24h
  renewBefore: 2h
`, "", func(t *testing.T, c Config) {
			if c.NodeName != "node-1" || c.CertDir != "/srv/pki" || c.ServingEnabled() || c.Timeout.Duration != 30*time.Second ||
				c.Rotation.RequestedDuration.Duration != 24*time.Hour || c.Rotation.RenewBefore.Duration != 2*time.Hour {
				t.Fatalf("config = %+v", c)
			}
			if c.Kubeconfig != "/etc/kubernetes/kubelet.conf" {
				t.Fatalf("unset keys must keep defaults, kubeconfig = %q", c.Kubeconfig)
			}
		}},
		{"unknown key is named", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nservng: {}\n", `unknown field "servng"`, nil},
		{"unknown nested key is named", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nserving: {dnsName: [x]}\n", `unknown field "serving.dnsName"`, nil},
		{"missing apiVersion", "kind: AgentConfig\n", `apiVersion/kind are ""/"AgentConfig", want "certagent.io/v1alpha1"/"AgentConfig"`, nil},
		{"bad duration", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\ntimeout: 10 minutes\n", `timeout: invalid duration "10 minutes"`, nil},
		{"bad nested duration", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nrotation: {renewBefore: 10}\n", `rotation.renewBefore: a duration must be a string`, nil},
		{"bad hook timeout", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nhooks: {postRenew: [{command: [x]}, {command: [y], timeout: soon}]}\n", `hooks.postRenew[1].timeout: invalid duration "soon"`, nil},
		{"bad postTrust hook timeout", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nhooks: {postTrust: [{command: [y], timeout: soon}]}\n", `hooks.postTrust[0].timeout: invalid duration "soon"`, nil},
		{"hook kinds", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nhooks: {postRenew: [{command: [x], kinds: [server]}, {command: [z]}]}\n", "", func(t *testing.T, c Config) {
			if h := c.Hooks.PostRenew; !h[0].RunsFor("server") || h[0].RunsFor("client") || !h[1].RunsFor("client") || !h[1].RunsFor("server") {
				t.Fatalf("hooks = %+v", h)
			}
		}},
		{"empty duration means unset", "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nrotation: {renewBefore: \"\"}\n", "", func(t *testing.T, c Config) {
			if c.Rotation.RenewBefore.Duration != 0 {
				t.Fatalf("renewBefore = %s", c.Rotation.RenewBefore)
			}
		}},
		{"not yaml", "{{{", "config ", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(p, true)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "config.yaml")
	if c, err := Load(missing, false); err != nil || c.CertDir != "/var/lib/kubelet/pki" {
		t.Fatalf("missing default file: %v, %+v; want defaults", err, c)
	}
	if _, err := Load(missing, true); err == nil {
		t.Fatal("a missing file named with --config must be an error")
	}
}

func TestValidate(t *testing.T) {
	base := Default()
	base.NodeName = "node-1"
	for _, tc := range []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{"ok", func(*Config) {}, ""},
		{"upper-case node", func(c *Config) { c.NodeName = "Node-1" }, "must be lower-case"},
		{"bad IP", func(c *Config) { c.Serving.IPAddresses = []string{"10.0.0.300"} }, `"10.0.0.300" is not an IP address`},
		{"short duration", func(c *Config) { c.Rotation.RequestedDuration = Duration{time.Minute} }, "below the Kubernetes minimum of 10m"},
		{"empty cert dir", func(c *Config) { c.CertDir = "" }, "certDir is empty"},
		{"renewBefore not shorter than requestedDuration", func(c *Config) {
			c.Rotation.RequestedDuration, c.Rotation.RenewBefore = Duration{10 * time.Minute}, Duration{20 * time.Minute}
		}, "rotation.renewBefore 20m0s is not shorter than the certificate lifetime rotation.requestedDuration 10m0s"},
		{"renewBefore equal to requestedDuration", func(c *Config) {
			c.Rotation.RequestedDuration, c.Rotation.RenewBefore = Duration{time.Hour}, Duration{time.Hour}
		}, "set renewBefore below 1h0m0s (20m0s renews at two thirds of the lifetime)"},
		// Before: postTrust was not checked, and execHook indexed an empty command when a trust file changed.
		{"empty postTrust command", func(c *Config) { c.Hooks.PostTrust = []Hook{{Command: []string{}}} }, "hooks.postTrust[0].command is empty"},
		{"negative postTrust timeout", func(c *Config) { c.Hooks.PostTrust = []Hook{{Command: []string{"x"}, Timeout: Duration{-time.Second}}} }, "hooks.postTrust[0].timeout must not be negative"},
		{"empty postRenew command", func(c *Config) { c.Hooks.PostRenew = []Hook{{Command: []string{"x"}}, {Command: []string{""}}} }, "hooks.postRenew[1].command is empty"},
		{"unknown hook kind", func(c *Config) { c.Hooks.PostRenew = []Hook{{Command: []string{"x"}, Kinds: []string{"serving"}}} }, `hooks.postRenew[0].kinds: "serving" is not one of client, server`},
		{"kinds on a postTrust hook", func(c *Config) { c.Hooks.PostTrust = []Hook{{Command: []string{"x"}, Kinds: []string{"server"}}} }, "hooks.postTrust[0].kinds: only hooks.postRenew runs per certificate"},
		{"hook kinds: fine", func(c *Config) {
			c.Hooks.PostRenew = []Hook{{Command: []string{"x"}, Kinds: []string{"server", "client"}}}
		}, ""},
		{"renewBefore shorter: fine", func(c *Config) {
			c.Rotation.RequestedDuration, c.Rotation.RenewBefore = Duration{10 * time.Minute}, Duration{9 * time.Minute}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.mutate(&c)
			err := c.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadConfigDropIns(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.yaml")
	_ = os.MkdirAll(filepath.Join(dir, "config.d"), 0o755)
	hdr := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"
	_ = os.WriteFile(main, []byte(hdr+"nodeName: main\ncertDir: /main\n"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "config.d", "20-b.yaml"), []byte(hdr+"nodeName: b\n"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "config.d", "10-a.yaml"), []byte(hdr+"nodeName: a\nserving: {dnsNames: [x]}\n"), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "config.d", "README"), []byte("not yaml: ["), 0o600)
	c, err := Load(main, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "b" || c.CertDir != "/main" || len(c.Serving.DNSNames) != 1 {
		t.Fatalf("drop-ins not applied in name order over the main file: %+v", c)
	}
	// Drop-ins apply even when the default main file is absent.
	_ = os.Remove(main)
	if c, err = Load(main, false); err != nil || c.NodeName != "b" {
		t.Fatalf("without the main file: %v, %q", err, c.NodeName)
	}
	_ = os.WriteFile(filepath.Join(dir, "config.d", "30-bad.yaml"), []byte(hdr+"nodename: typo\n"), 0o600)
	if _, err := Load(main, false); err == nil || !strings.Contains(err.Error(), "30-bad.yaml") || !strings.Contains(err.Error(), `unknown field "nodename"`) {
		t.Fatalf("bad drop-in: %v", err)
	}
}
