package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// docsConfigExample is the full example of docs/config.md, except that the
// two rotation durations are set: the documented `""` is not a valid duration
// (time.ParseDuration("") fails), so the example as printed does not load.
const docsConfigExample = `apiVersion: certagent.io/v1alpha1   # required
kind: AgentConfig                   # required
nodeName: ""
bootstrapKubeconfig: /etc/kubernetes/bootstrap-kubelet.conf
kubeconfig: /etc/kubernetes/kubelet.conf
certDir: /var/lib/kubelet/pki
issuerCAFile: ""
allowInsecureBootstrap: false
timeout: 10m
logLevel: info
serving:
  enabled: true
  dnsNames: []
  ipAddresses: []
rotation:
  requestedDuration: 24h
  renewBefore: 2h
hooks:
  postRenew:
  - command: ["/usr/bin/systemctl", "try-reload-or-restart", "my-exporter.service"]
    timeout: 30s
metrics:
  address: 127.0.0.1:10271
`

// FuzzConfig feeds arbitrary bytes to Load as an explicit --config file.
// It checks that loading never panics, that every load error names the file,
// that Validate never panics on a loaded config, and that a loaded config
// survives yaml.Marshal and a second Load unchanged (up to the
// normalisation in roundTripWant).
func FuzzConfig(f *testing.F) {
	const minimal = "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"
	for _, s := range []string{
		docsConfigExample,
		strings.Replace(docsConfigExample, `requestedDuration: 24h`, `requestedDuration: ""`, 1),
		minimal,
		minimal + "nodeName: node-1\nserving: {enabled: false, dnsNames: [a.example], ipAddresses: [10.1.2.3, \"::1\"]}\n",
		minimal + "nodeName: node-1\nbootstrapKubeconfig: \"\"\nserving: {enabled: null}\n",
		minimal + "servng: {}\n",
		minimal + "serving: {dnsName: [x]}\nhooks: {postRenew: [{command: [a], extra: 1}]}\n",
		minimal + "timeout: 10 minutes\n",
		minimal + "timeout: 10\n",
		minimal + "rotation: {renewBefore: -1h, requestedDuration: 9223372036854775807ns}\n",
		"kind: AgentConfig\n",
		"{{{",
		"",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir() // one directory per worker process; calls are sequential
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p, true)
		if err != nil {
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error does not name the file %s: %v", p, err)
			}
			return
		}
		_ = cfg.Validate()
		_ = cfg.ServingEnabled()

		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshalling a loaded config: %v", err)
		}
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := Load(p, true)
		if err != nil {
			t.Fatalf("re-loading the marshalled config: %v\n%s", err, out)
		}
		if want := roundTripWant(cfg); !reflect.DeepEqual(again, want) {
			t.Fatalf("round trip changed the config\nloaded:   %#v\nreloaded: %#v\nyaml:\n%s", want, again, out)
		}
	})
}

// roundTripWant is what a marshal + load of c is expected to give. Fields
// tagged omitempty vanish from the YAML when they hold their zero value, so
// the reload sees the default instead: empty slices become nil, a nil
// serving.enabled becomes the default true (the same meaning: nil means
// enabled), and an empty bootstrapKubeconfig/kubeconfig/certDir comes back as
// the default path (a change of meaning, but one Validate rejects anyway);
// an empty logLevel comes back as info (the same meaning).
func roundTripWant(c Config) Config {
	d := Default()
	if c.Serving.Enabled == nil {
		c.Serving.Enabled = d.Serving.Enabled
	}
	for _, p := range []struct {
		got *string
		def string
	}{
		{&c.BootstrapKubeconfig, d.BootstrapKubeconfig}, {&c.Kubeconfig, d.Kubeconfig}, {&c.CertDir, d.CertDir},
	} {
		if *p.got == "" {
			*p.got = p.def
		}
	}
	if c.LogLevel == "" {
		c.LogLevel = d.LogLevel
	}
	if len(c.Serving.DNSNames) == 0 {
		c.Serving.DNSNames = nil
	}
	if len(c.Serving.IPAddresses) == 0 {
		c.Serving.IPAddresses = nil
	}
	if len(c.Hooks.PostRenew) == 0 {
		c.Hooks.PostRenew = nil
	}
	return c
}
