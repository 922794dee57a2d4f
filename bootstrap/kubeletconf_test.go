package bootstrap

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/bootstrap/kubeconfig"
	"github.com/certagent/certagent/bootstrap/kubeconfig/kubeconfigtest"
)

// provisionerKubeconfig is a bootstrap kubeconfig as provisioners write them:
// several contexts, the API server reached through a proxy at a name its
// certificate does not carry (tls-server-name does), compression off, an
// extension, a CA file given relative to the kubeconfig.
const provisionerKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: other
  cluster: {server: "https://other.example:6443", certificate-authority: ca.crt}
- name: prod
  cluster:
    server: https://api.internal.example:6443
    tls-server-name: kubernetes.default.svc
    proxy-url: http://proxy.example:3128
    disable-compression: true
    certificate-authority: ca.crt
    extensions:
    - name: example.com/region
      extension: {region: eu-1}
users:
- name: bootstrap
  user: {token: abcdef.0123456789abcdef}
contexts:
- name: other
  context: {cluster: other, user: bootstrap}
- name: prod
  context: {cluster: prod, user: bootstrap}
current-context: prod
`

// connection is how a client configuration reaches the API server.
func connection(t *testing.T, rc *rest.Config) string {
	t.Helper()
	proxy := "none"
	if rc.Proxy != nil {
		u, err := rc.Proxy(&http.Request{URL: &url.URL{Scheme: "https", Host: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		proxy = u.String()
	}
	return strings.Join([]string{rc.Host, "server-name=" + rc.ServerName, "proxy=" + proxy,
		"compression-off=" + map[bool]string{true: "yes", false: "no"}[rc.DisableCompression], "ca=" + rc.CAFile}, " ")
}

// TestKubeletConfConnectsAsTheBootstrapDid: kubelet.conf carries every
// connection setting of the bootstrap kubeconfig's current cluster, and the
// proof that lets the bootstrap kubeconfig go is made with kubelet.conf as
// read from disk the way the kubelet reads it: its certificate files, no
// token, the same connection. A proof that fails keeps the bootstrap
// kubeconfig.
func TestKubeletConfConnectsAsTheBootstrapDid(t *testing.T) {
	for _, proofOK := range []bool{true, false} {
		t.Run(map[bool]string{true: "proof succeeds", false: "proof fails"}[proofOK], func(t *testing.T) {
			f := newFixture(t)
			kubeconfigtest.WriteFile(t, f.dir, "bootstrap-kubelet.conf", provisionerKubeconfig)
			f.autoApprove()
			boot, err := kubeconfig.LoadBootstrap(f.cfg.BootstrapKubeconfigPath, false)
			if err != nil {
				t.Fatal(err)
			}
			want := connection(t, boot.Config)
			if !strings.Contains(want, "proxy=http://proxy.example:3128") || !strings.Contains(want, "server-name=kubernetes.default.svc") {
				t.Fatalf("the fixture's bootstrap connection is %s", want)
			}
			var proven []string
			f.cfg.CheckIdentity = func(_ context.Context, rc *rest.Config, node string) error {
				proven = append(proven, connection(t, rc))
				if rc.BearerToken != "" || rc.CertFile != CurrentPath(f.cfg.CertDir, Client) || rc.KeyFile != rc.CertFile {
					return errors.New("not kubelet.conf's credential")
				}
				if connection(t, rc) != want {
					return errors.New("kubelet.conf does not reach the API server as the bootstrap did")
				}
				if !proofOK {
					return errors.New("the API server is unreachable")
				}
				return nil
			}
			b := f.bootstrapper()
			_, err = b.EnsureClient(context.Background(), false)
			if proofOK != (err == nil) {
				t.Fatalf("EnsureClient: %v", err)
			}
			// The kubelet's own loader sees the same connection.
			asKubelet, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
				&clientcmd.ClientConfigLoadingRules{ExplicitPath: f.cfg.KubeconfigPath}, &clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				t.Fatal(err)
			}
			if got := connection(t, asKubelet); got != want {
				t.Fatalf("kubelet.conf connects as\n  %s\nthe bootstrap kubeconfig as\n  %s", got, want)
			}
			raw, err := clientcmd.LoadFromFile(f.cfg.KubeconfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if ext := raw.Clusters["default-cluster"].Extensions; len(ext) != 1 || ext["example.com/region"] == nil {
				t.Fatalf("extensions %v, want the bootstrap kubeconfig's", ext)
			}
			if len(proven) != 1 || proven[0] != want {
				t.Fatalf("proofs made with %q, want one with %q", proven, want)
			}
			if kept := exists(f.cfg.BootstrapKubeconfigPath); kept == proofOK {
				t.Fatalf("bootstrap kubeconfig kept: %v, with the proof succeeding: %v", kept, proofOK)
			}
		})
	}
}

// TestRenamedNodeBootstrapsAgain: kubelet.conf for system:node:node-a on a
// node now configured as node-b is as unusable as a rejected one: with a
// bootstrap kubeconfig the node bootstraps as node-b; without one the error
// says what to do, and nothing is requested.
func TestRenamedNodeBootstrapsAgain(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	f.cfg.NodeName = "node-b"
	t.Run("no bootstrap kubeconfig", func(t *testing.T) {
		before := f.creates.Load()
		_, err := f.bootstrapper().EnsureClient(context.Background(), false)
		if !errors.Is(err, ErrNoCredentials) || !errors.Is(err, ErrOtherNode) {
			t.Fatalf("EnsureClient = %v, want ErrNoCredentials and ErrOtherNode", err)
		}
		for _, s := range []string{`"system:node:node-a"`, `"system:node:node-b"`, "set nodeName: node-a", "no bootstrap kubeconfig at " + f.cfg.BootstrapKubeconfigPath} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error does not say %q: %v", s, err)
			}
		}
		if f.creates.Load() != before {
			t.Fatal("a CSR was posted without credentials for it")
		}
	})
	t.Run("a bootstrap kubeconfig dropped in", func(t *testing.T) {
		kubeconfigtest.WriteFile(t, f.dir, "bootstrap-kubelet.conf", kubeconfigtest.Bootstrap)
		b := f.bootstrapper()
		res, err := b.EnsureClient(context.Background(), false)
		if err != nil || !res.Stored {
			t.Fatalf("EnsureClient = stored %v, %v", res.Stored, err)
		}
		node, err := b.LoadNode()
		if err != nil || node.Leaf.Subject.CommonName != "system:node:node-b" {
			t.Fatalf("kubelet.conf after the bootstrap: %v, %v", node, err)
		}
		if exists(f.cfg.BootstrapKubeconfigPath) {
			t.Fatal("bootstrap kubeconfig left")
		}
	})
}

// TestAPIServerNamingAnotherNodeBootstrapsAgain: a kubelet.conf the API
// server maps to another user than this node (its certificate says this
// node) is not trusted either: with a bootstrap kubeconfig the node
// bootstraps again; without one it reports the rejection.
func TestAPIServerNamingAnotherNodeBootstrapsAgain(t *testing.T) {
	f := newFixture(t)
	f.autoApprove()
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	other := errors.Join(ErrOtherNode, errors.New("the API server says system:node:node-z"))
	f.identity = other
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); !errors.Is(err, ErrIdentityRejected) {
		t.Fatalf("without a bootstrap kubeconfig: %v, want ErrIdentityRejected", err)
	}
	kubeconfigtest.WriteFile(t, f.dir, "bootstrap-kubelet.conf", kubeconfigtest.Bootstrap)
	before := f.creates.Load()
	calls := 0
	f.cfg.CheckIdentity = func(context.Context, *rest.Config, string) error {
		calls++
		if calls == 1 {
			return other // the old kubelet.conf
		}
		return nil
	}
	if _, err := f.bootstrapper().EnsureClient(context.Background(), false); err != nil {
		t.Fatalf("with a bootstrap kubeconfig: %v", err)
	}
	if f.creates.Load() != before+1 || exists(f.cfg.BootstrapKubeconfigPath) {
		t.Fatalf("%d CSRs posted, bootstrap kubeconfig left %v; want 1 and removed", f.creates.Load()-before, exists(f.cfg.BootstrapKubeconfigPath))
	}
	if _, err := os.Stat(f.cfg.KubeconfigPath); err != nil {
		t.Fatal(err)
	}
}
