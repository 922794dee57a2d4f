package kubeconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/bootstrap/kubeconfig/kubeconfigtest"
)

func TestLoadBootstrapKubeconfig(t *testing.T) {
	caPEM := kubeconfigtest.CAPEM(t)
	for _, tc := range []struct {
		name     string
		content  string
		insecure bool
		wantErr  string
	}{
		{"good, relative CA path resolved against the file", kubeconfigtest.Bootstrap, false, ""},
		{"garbage", "{{{ not yaml", false, "is not a valid kubeconfig"},
		{"no current context", strings.Replace(kubeconfigtest.Bootstrap, "current-context: bootstrap@kubernetes", "", 1) + "contexts:\n- name: a\n  context: {cluster: kubernetes, user: bootstrap}\n- name: b\n  context: {cluster: kubernetes, user: bootstrap}\n", false, "has no current-context"},
		{"no cluster", strings.Replace(kubeconfigtest.Bootstrap, "cluster: kubernetes, user", "cluster: missing, user", 1), false, `names cluster "missing", which is not defined under clusters`},
		{"no user", strings.Replace(kubeconfigtest.Bootstrap, "user: bootstrap}", "user: nobody}", 1), false, `names user "nobody", which is not defined under users`},
		{"no token", strings.Replace(kubeconfigtest.Bootstrap, "token: abcdef.0123456789abcdef", "username: x", 1), false, `user "bootstrap" has no credentials`},
		{"CA file missing", strings.Replace(kubeconfigtest.Bootstrap, "ca.crt", "missing-ca.crt", 1), false, `certificate-authority: stat `},
		{"insecure refused", strings.Replace(kubeconfigtest.Bootstrap, "certificate-authority: ca.crt", "insecure-skip-tls-verify: true", 1), false, "sets insecure-skip-tls-verify"},
		{"insecure allowed", strings.Replace(kubeconfigtest.Bootstrap, "certificate-authority: ca.crt", "insecure-skip-tls-verify: true", 1), true, ""},
		{"no server", strings.Replace(kubeconfigtest.Bootstrap, "server: https://127.0.0.1:6443", "server: \"\"", 1), false, `cluster "kubernetes" has no server`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kubeconfigtest.WriteFile(t, dir, "ca.crt", string(caPEM))
			p := kubeconfigtest.WriteFile(t, dir, "bootstrap.conf", tc.content)
			rc, err := bootstrapConfig(LoadBootstrap(p, tc.insecure))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if rc.BearerToken != "abcdef.0123456789abcdef" || rc.Host != "https://127.0.0.1:6443" {
					t.Fatalf("rest config = host %q token set %v", rc.Host, rc.BearerToken != "")
				}
				if !tc.insecure && rc.CAFile != filepath.Join(dir, "ca.crt") {
					t.Fatalf("CAFile = %q, want it resolved to %q", rc.CAFile, filepath.Join(dir, "ca.crt"))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q does not name the file %s", err, p)
			}
		})
	}
	t.Run("missing file wraps ErrNotExist", func(t *testing.T) {
		_, err := LoadBootstrap(filepath.Join(t.TempDir(), "nope"), false)
		if !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
			t.Fatalf("error = %v", err)
		}
	})
}

// TestKubeletClusterDecidesEveryField: every field of client-go's
// clientcmdapi.Cluster is decided (carried into kubelet.conf, or why not),
// and a field client-go adds fails this test until it is.
func TestKubeletClusterDecidesEveryField(t *testing.T) {
	decided := map[string]string{
		"LocationOfOrigin":         "not serialized: where clientcmd read the entry",
		"Server":                   "carried",
		"TLSServerName":            "carried",
		"InsecureSkipTLSVerify":    "carried",
		"CertificateAuthority":     "carried, made absolute",
		"CertificateAuthorityData": "carried",
		"ProxyURL":                 "carried",
		"DisableCompression":       "carried",
		"Extensions":               "carried",
	}
	typ := reflect.TypeFor[clientcmdapi.Cluster]()
	for i := range typ.NumField() {
		if _, ok := decided[typ.Field(i).Name]; !ok {
			t.Errorf("clientcmdapi.Cluster.%s is new: decide whether kubelet.conf carries it (KubeletCluster) and add it here", typ.Field(i).Name)
		}
	}
	src := &clientcmdapi.Cluster{
		LocationOfOrigin:         "/etc/kubernetes/bootstrap-kubelet.conf",
		Server:                   "https://api.example:6443",
		TLSServerName:            "kubernetes.default",
		InsecureSkipTLSVerify:    true,
		CertificateAuthority:     "/etc/kubernetes/pki/ca.crt",
		CertificateAuthorityData: []byte("ca data"),
		ProxyURL:                 "http://proxy.example:3128",
		DisableCompression:       true,
		Extensions:               map[string]runtime.Object{"example.com/x": &runtime.Unknown{Raw: []byte(`{"a":1}`)}},
	}
	got, err := KubeletCluster(src)
	if err != nil {
		t.Fatal(err)
	}
	v, w := reflect.ValueOf(got).Elem(), reflect.ValueOf(src).Elem()
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		carried := reflect.DeepEqual(v.Field(i).Interface(), w.Field(i).Interface())
		if want := strings.HasPrefix(decided[name], "carried"); carried != want {
			t.Errorf("%s: carried %v, decided %q", name, carried, decided[name])
		}
	}
	t.Run("relative CA path made absolute", func(t *testing.T) {
		got, err := KubeletCluster(&clientcmdapi.Cluster{Server: "https://a", CertificateAuthority: "ca.crt"})
		if err != nil || !filepath.IsAbs(got.CertificateAuthority) {
			t.Fatalf("CA %q, %v", got.CertificateAuthority, err)
		}
	})
}
