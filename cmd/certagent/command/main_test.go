package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagsOverrideConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yaml")
	_ = os.WriteFile(p, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nnodeName: from-file\ncertDir: /file/pki\n"), 0o600)
	c := newCommonFlags("run", os.Stderr)
	if err := c.fs.Parse([]string{"--config", p, "--cert-dir", "/flag/pki"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CertDir != "/flag/pki" || cfg.NodeName != "from-file" {
		t.Fatalf("certDir %q nodeName %q: flags must override only what they set", cfg.CertDir, cfg.NodeName)
	}
}

func TestUnexpectedArgumentsAreRejected(t *testing.T) {
	for _, args := range [][]string{
		{"run", "--once", "renew"},
		{"renew", "--force", "extra"},
		{"status", "-o", "json", "now"},
	} {
		var out strings.Builder
		if code := Main(args, &out, &out); code != 2 || !strings.Contains(out.String(), "unexpected argument") {
			t.Errorf("%v: exit %d, output %q; want exit 2 naming the argument", args, code, out.String())
		}
	}
}
