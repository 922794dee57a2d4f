package command

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const configHeader = "apiVersion: certagent.io/v1alpha1\nkind: AgentConfig\n"

// configDir writes config.yaml and the drop-ins (name → body, without the
// header) and returns the main file's path.
func configDir(t *testing.T, main string, dropIns map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "config.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(configHeader+main), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, body := range dropIns {
		if err := os.WriteFile(filepath.Join(dir, "config.d", name), []byte(configHeader+body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

type configJSON map[string]struct {
	Value  any    `json:"value"`
	Origin string `json:"origin"`
}

func runConfig(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut strings.Builder
	code = Main(append([]string{"config"}, args...), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestConfigOrigins: every value says where it came from: the default, the
// file, a drop-in over the file (later drop-ins over earlier ones), a flag
// over both, the host name for a node name nobody set. A file that sets a
// value to its default is still its origin.
func TestConfigOrigins(t *testing.T) {
	path := configDir(t, `certDir: /main/pki
timeout: 10m
logLevel: warn
serving: {dnsNames: [main.example], ipAddresses: [10.0.0.1]}
`, map[string]string{
		"10-x.yaml": "certDir: /dropin/pki\nserving: {ipAddresses: [10.0.0.2]}\nmetrics: {address: \"\"}\nlogLevel: info\n",
		"20-y.yaml": "logLevel: error\nrotation: {renewBefore: 2h}\n",
	})
	dropX, dropY := filepath.Join(filepath.Dir(path), "config.d", "10-x.yaml"), filepath.Join(filepath.Dir(path), "config.d", "20-y.yaml")
	code, stdout, stderr := runConfig(t, "-o", "json", "--config", path, "--cert-dir", "/flag/pki", "--log-level", "debug", "--serving=false")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got configJSON
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatalf("-o json does not parse: %v\n%s", err, stdout)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		key    string
		value  any
		origin string
	}{
		{"nodeName", strings.ToLower(host), "host name"},
		{"bootstrapKubeconfig", "/etc/kubernetes/bootstrap-kubelet.conf", "default"},
		{"kubeconfig", "/etc/kubernetes/kubelet.conf", "default"},
		{"certDir", "/flag/pki", "flag --cert-dir"},
		{"allowInsecureBootstrap", false, "default"},
		{"timeout", "10m0s", path},
		{"logLevel", "debug", "flag --log-level"},
		{"serving.enabled", false, "flag --serving"},
		{"serving.dnsNames", []any{"main.example"}, path},
		{"serving.ipAddresses", []any{"10.0.0.2"}, dropX},
		{"rotation.requestedDuration", "0s", "default"},
		{"rotation.renewBefore", "2h0m0s", dropY},
		{"hooks.postRenew", []any{}, "default"},
		{"metrics.address", "", dropX},
	} {
		e, ok := got[want.key]
		if !ok || e.Origin != want.origin || !reflect.DeepEqual(e.Value, want.value) {
			t.Errorf("%s = %#v from %q, want %#v from %q", want.key, e.Value, e.Origin, want.value, want.origin)
		}
	}

	t.Run("node name from the file, then from the flag", func(t *testing.T) {
		path := configDir(t, "nodeName: node-file\n", nil)
		_, stdout, _ := runConfig(t, "--config", path)
		if !regexp.MustCompile(`(?m)^nodeName: node-file +# ` + regexp.QuoteMeta(path) + `$`).MatchString(stdout) {
			t.Errorf("text output:\n%s", stdout)
		}
		_, stdout, _ = runConfig(t, "--config", path, "--node-name", "node-flag")
		if !regexp.MustCompile(`(?m)^nodeName: node-flag +# flag --node-name$`).MatchString(stdout) {
			t.Errorf("text output:\n%s", stdout)
		}
	})
}

// TestConfigListsEverySettingInTheDocsOrder: the listing follows
// docs/config.md, in both outputs, and every key it shows is documented.
func TestConfigListsEverySettingInTheDocsOrder(t *testing.T) {
	want := []string{"nodeName", "bootstrapKubeconfig", "kubeconfig", "certDir", "issuerCAFile", "allowInsecureBootstrap",
		"timeout", "logLevel", "serving.enabled", "serving.dnsNames", "serving.ipAddresses",
		"rotation.requestedDuration", "rotation.renewBefore", "hooks.postRenew", "hooks.postTrust", "metrics.address",
		"attestation.serviceURL", "attestation.serviceCAFile", "attestation.serviceCAHash", "attestation.tpm", "attestation.server",
		"attestation.certificateAuthority", "attestation.order",
		"trust.follow", "trust.caFile", "trust.kubeletClientCAFile", "trust.kubeletClientCASigner", "trust.reissueSpread"}
	path := configDir(t, "nodeName: node-1\n", nil)
	_, stdout, _ := runConfig(t, "--config", path)
	var keys []string
	for _, l := range strings.Split(strings.TrimSpace(stdout), "\n") {
		k, _, _ := strings.Cut(l, ":")
		keys = append(keys, k)
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("text keys %q, want %q", keys, want)
	}
	_, stdout, _ = runConfig(t, "--config", path, "-o", "json")
	var ordered []string
	dec := json.NewDecoder(strings.NewReader(stdout))
	_, _ = dec.Token() // {
	for dec.More() {
		k, _ := dec.Token()
		ordered = append(ordered, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(ordered, want) {
		t.Fatalf("json keys %q, want %q", ordered, want)
	}
	docs, err := os.ReadFile("../../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range want {
		_, leaf, _ := strings.Cut(k, ".")
		if leaf == "" {
			leaf = k
		}
		if !strings.Contains(string(docs), "\n"+leaf+":") && !strings.Contains(string(docs), "  "+leaf+":") {
			t.Errorf("%s is not in docs/config.md's example", k)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	t.Run("ok", func(t *testing.T) {
		path := configDir(t, "nodeName: node-1\n", map[string]string{"10-x.yaml": "timeout: 5m\n"})
		code, stdout, stderr := runConfig(t, "--check", "--config", path)
		want := "configuration OK; files read:\n  " + path + "\n  " + filepath.Join(filepath.Dir(path), "config.d", "10-x.yaml") + "\n"
		if code != 0 || stdout != want || stderr != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and %q", code, stdout, stderr, want)
		}
	})
	for _, tc := range []struct {
		name    string
		main    string
		dropIns map[string]string
		flags   []string
		want    string
	}{
		{"unknown key", "servng: {}\n", nil, nil, `: unknown field "servng"`},
		{"bad duration", "timeout: 10 minutes\n", nil, nil, `: timeout: invalid duration "10 minutes"`},
		{"bad drop-in", "", map[string]string{"30-bad.yaml": "rotation: {renewBefore: soon}\n"}, nil, `30-bad.yaml: rotation.renewBefore: invalid duration "soon"`},
		{"invalid", "rotation: {requestedDuration: 1h, renewBefore: 2h}\n", nil, nil,
			"certagent: invalid configuration: rotation.renewBefore 2h0m0s is not shorter than the certificate lifetime"},
		{"invalid flag value", "", nil, []string{"--timeout", "0s"}, "certagent: invalid configuration: timeout must be positive"},
		{"bad log format", "", nil, []string{"--log-format", "xml"}, `certagent: unknown log format "xml" (console or json)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := configDir(t, "nodeName: node-1\n"+tc.main, tc.dropIns)
			args := append([]string{"--config", path}, tc.flags...)
			code, stdout, stderr := runConfig(t, append([]string{"--check"}, args...)...)
			if code != 2 || stdout != "" || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit 2 and %q", code, stdout, stderr, tc.want)
			}
			// run stops before it starts anything with the same message.
			var runOut, runErr strings.Builder
			if code := Main(append([]string{"run", "--once"}, args...), &runOut, &runErr); code != 2 || runErr.String() != stderr {
				t.Fatalf("run: exit %d, stderr %q; config --check said %q", code, runErr.String(), stderr)
			}
		})
	}
}

// TestConfigShowsAnInvalidConfiguration: without --check the listing is
// still printed (to find the culprit), and the exit code says run would
// refuse it.
func TestConfigShowsAnInvalidConfiguration(t *testing.T) {
	path := configDir(t, "nodeName: node-1\nserving: {ipAddresses: [10.0.0.300]}\n", nil)
	code, stdout, stderr := runConfig(t, "--config", path)
	if code != 2 || !strings.Contains(stdout, `serving.ipAddresses: ["10.0.0.300"]`) ||
		!strings.Contains(stderr, `certagent: invalid configuration: serving.ipAddresses: "10.0.0.300" is not an IP address`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestConfigPrintsNoKubeconfigContents: paths only, never what the files hold.
func TestConfigPrintsNoKubeconfigContents(t *testing.T) {
	dir := t.TempDir()
	bk := filepath.Join(dir, "bootstrap-kubelet.conf")
	if err := os.WriteFile(bk, []byte(tokenKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	path := configDir(t, "nodeName: node-1\nbootstrapKubeconfig: "+bk+"\n", nil)
	for _, args := range [][]string{{"--config", path}, {"--config", path, "-o", "json"}, {"--config", path, "--check"}} {
		_, stdout, stderr := runConfig(t, args...)
		if strings.Contains(stdout+stderr, "0123456789abcdef") {
			t.Fatalf("%v printed the token:\n%s%s", args, stdout, stderr)
		}
	}
}

func TestTextValue(t *testing.T) {
	for in, want := range map[string]string{
		`"node-1"`:          "node-1",
		`"127.0.0.1:10271"`: "127.0.0.1:10271",
		`""`:                `""`,
		`"10"`:              `"10"`,
		`"true"`:            `"true"`,
		`"a #b"`:            `"a #b"`,
		`true`:              "true",
		`["a","b"]`:         `["a","b"]`,
	} {
		if got := textValue(json.RawMessage(in)); got != want {
			t.Errorf("textValue(%s) = %s, want %s", in, got, want)
		}
	}
}

// tokenKubeconfig is a bootstrap kubeconfig with a token whose secret is
// 0123456789abcdef.
const tokenKubeconfig = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", certificate-authority: ca.crt}}]
users: [{name: u, user: {token: abcdef.0123456789abcdef}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
