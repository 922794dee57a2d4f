package kubeconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/bootstrap/kubeconfig/kubeconfigtest"
)

// FuzzBootstrapKubeconfig feeds arbitrary bytes, as a file next to a valid
// ca.crt, to LoadBootstrap (secure and insecure) and
// LoadKubelet. It checks that none of them panics, that a success
// yields a rest.Config with a Host, and that every error names the file.
func FuzzBootstrapKubeconfig(f *testing.F) {
	for _, s := range []string{
		kubeconfigtest.Bootstrap,
		strings.Replace(kubeconfigtest.Bootstrap, "certificate-authority: ca.crt", "insecure-skip-tls-verify: true", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "token: abcdef.0123456789abcdef", "tokenFile: ca.crt", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "token: abcdef.0123456789abcdef", "client-certificate: ca.crt\n    client-key: ca.crt", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "token: abcdef.0123456789abcdef", "exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true, interactiveMode: Never}", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "token: abcdef.0123456789abcdef", "username: x", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "current-context: bootstrap@kubernetes", "current-context: nope", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "current-context: bootstrap@kubernetes", "", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "server: https://127.0.0.1:6443", "server: \"::\"", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "https://127.0.0.1:6443", "", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "ca.crt", "missing.crt", 1),
		strings.Replace(kubeconfigtest.Bootstrap, "cluster: kubernetes, user", "cluster: missing, user", 1),
		"apiVersion: v1\nkind: Config\n",
		`{"apiVersion":"v1","kind":"Config","clusters":[{"name":"c","cluster":{"server":"https://h"}}]}`,
		"{{{ not yaml",
		"",
	} {
		f.Add([]byte(s))
	}
	caPEM := kubeconfigtest.CAPEM(f)
	dir := f.TempDir() // one directory per worker process; calls are sequential
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "bootstrap.conf")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, load := range []struct {
			name string
			fn   func() (*rest.Config, error)
		}{
			{"LoadBootstrap(secure)", func() (*rest.Config, error) { return bootstrapConfig(LoadBootstrap(p, false)) }},
			{"LoadBootstrap(insecure)", func() (*rest.Config, error) { return bootstrapConfig(LoadBootstrap(p, true)) }},
			{"LoadKubelet", func() (*rest.Config, error) { return LoadKubelet(p) }},
		} {
			rc, err := load.fn()
			if err != nil {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("%s: error does not name the file %s: %v", load.name, p, err)
				}
				continue
			}
			if rc == nil || rc.Host == "" {
				t.Errorf("%s: success without a server: %+v", load.name, rc)
			}
		}
	})
}

// bootstrapConfig is the client configuration of a loaded kubeconfig.
func bootstrapConfig(k *File, err error) (*rest.Config, error) {
	if err != nil {
		return nil, err
	}
	return k.Config, nil
}
