package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/certagent/certagent/agent"
	"github.com/certagent/certagent/agent/config"
	"github.com/certagent/certagent/internal/syncbuf"
)

func TestLogLevels(t *testing.T) {
	for _, tc := range []struct {
		level string
		want  []string // of the lines logged at debug, info, warn and error
	}{
		{"debug", []string{"at-debug", "at-info", "at-warn", "at-error"}},
		{"info", []string{"at-info", "at-warn", "at-error"}},
		{"", []string{"at-info", "at-warn", "at-error"}},
		{"warn", []string{"at-warn", "at-error"}},
		{"error", []string{"at-error"}},
	} {
		t.Run("level "+tc.level, func(t *testing.T) {
			level, err := config.ParseLogLevel(tc.level)
			if err != nil {
				t.Fatal(err)
			}
			var buf syncbuf.Buffer
			log, err := newLogger("console", zap.NewAtomicLevelAt(level), &buf)
			if err != nil {
				t.Fatal(err)
			}
			log = log.Named("sub") // subsystems log through derived loggers
			log.Debug("at-debug")
			log.Info("at-info")
			log.Warn("at-warn")
			log.Error("at-error")
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				if f := strings.Fields(l); len(f) > 0 {
					got = append(got, f[len(f)-1])
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("logged %q, want %q", got, tc.want)
			}
		})
	}
}

// TestUnknownLogLevelIsRefused: a bad --log-level or logLevel stops every
// command that logs (and config --check) with exit 2, listing the levels.
func TestUnknownLogLevelIsRefused(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nlogLevel: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(good, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--config", good, "--log-level", "verbose"}, `invalid value "verbose" for flag -log-level: unknown log level "verbose": use debug, info, warn or error`},
		{[]string{"renew", "--config", good, "--log-level=DEBUG"}, `unknown log level "DEBUG": use debug, info, warn or error`},
		{[]string{"config", "--config", good, "--log-level", "trace"}, `unknown log level "trace": use debug, info, warn or error`},
		{[]string{"run", "--once", "--config", bad, "--node-name", "node-1"}, `certagent: invalid configuration: logLevel: unknown log level "loud": use debug, info, warn or error`},
		{[]string{"renew", "--config", bad, "--node-name", "node-1"}, `certagent: invalid configuration: logLevel: unknown log level "loud": use debug, info, warn or error`},
		{[]string{"config", "--check", "--config", bad, "--node-name", "node-1"}, `certagent: invalid configuration: logLevel: unknown log level "loud": use debug, info, warn or error`},
	} {
		t.Run(strings.Join(tc.args[:2], " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := Main(tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 and %q", code, stderr.String(), tc.want)
			}
		})
	}
}

// TestFlagLogLevelOverridesTheFile: --log-level wins over logLevel, also on
// a reload (the flags stay on top).
func TestFlagLogLevelOverridesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nlogLevel: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCommonFlags("run", os.Stderr)
	c.addRunFlags()
	if err := c.parse([]string{"--config", path, "--log-level", "debug"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.load()
	if err != nil || cfg.LogLevel != "debug" {
		t.Fatalf("logLevel %q (%v), want the flag's debug", cfg.LogLevel, err)
	}
}

// TestReloadChangesTheLogLevel: SIGHUP applies a new logLevel at once, to
// the agent's logger and the subsystems' loggers derived from it, without a
// restart.
func TestReloadChangesTheLogLevel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	write := func(level string) {
		body := "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\nlogLevel: " + level + "\n"
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("info")
	c := newCommonFlags("run", os.Stderr)
	if err := c.parse([]string{"--config", path, "--node-name", "node-1", "--cert-dir", filepath.Join(dir, "pki"),
		"--kubeconfig", filepath.Join(dir, "kubelet.conf"), "--bootstrap-kubeconfig", filepath.Join(dir, "bootstrap.conf")}); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.load()
	if err != nil {
		t.Fatal(err)
	}
	l, _ := config.ParseLogLevel(cfg.LogLevel)
	level := zap.NewAtomicLevelAt(l)
	var buf syncbuf.Buffer
	log, err := newLogger("console", level, &buf)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, agent.Options{Logger: log, Level: &level, Notifier: agent.NopNotifier{}, NoControlSocket: true})
	if err != nil {
		t.Fatal(err)
	}
	sub := log.Named("bootstrap") // the agent logs through the logger it was given
	sub.Debug("before-reload")

	write("debug")
	a.Reload(c.load)
	sub.Debug("after-debug-reload")
	if got := a.Config().LogLevel; got != "debug" {
		t.Fatalf("running logLevel %q after the reload, want debug", got)
	}

	write("error")
	a.Reload(c.load)
	sub.Info("after-error-reload")

	out := buf.String()
	if strings.Contains(out, "before-reload") || !strings.Contains(out, "after-debug-reload") || strings.Contains(out, "after-error-reload") {
		t.Fatalf("the level did not follow the reloads:\n%s", out)
	}
	if !strings.Contains(out, `"changed": ["logLevel"]`) {
		t.Fatalf("the reload did not say what changed:\n%s", out)
	}
}
