package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/certagent/certagent/test/controlplane"
)

// connectProxy is an HTTP CONNECT proxy on the IPv6 loopback that knows the
// API server by a name nothing else resolves: a node whose kubeconfig does
// not send it through the proxy cannot reach the API server at all.
type connectProxy struct {
	addr    string // [::1]:port
	name    string // host:port the proxy resolves
	target  string // where that name goes
	tunnels atomic.Int32
	ln      net.Listener
	wg      sync.WaitGroup
}

func startConnectProxy(t *testing.T, name, target string) *connectProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("listening on the IPv6 loopback: %v", err)
	}
	p := &connectProxy{addr: ln.Addr().String(), name: name, target: target, ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect || req.Host != p.name {
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	p.tunnels.Add(1)
	fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// writeProvisionerKubeconfig writes a bootstrap kubeconfig as provisioners
// write them: a decoy context first; the current one reaches the API server
// at apiName (resolved only by the proxy) through proxy-url, checks its
// certificate against tls-server-name (the URL's host is not in it), has
// compression off, names its CA relative to the kubeconfig, and
// authenticates with user (YAML).
func writeProvisionerKubeconfig(t *testing.T, n *node, proxy *connectProxy, user string) {
	t.Helper()
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(n.bootstrap), "cluster-ca.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: decoy
  cluster: {server: "https://decoy.invalid:6443", certificate-authority: cluster-ca.crt}
- name: prod
  cluster:
    server: https://%s
    proxy-url: http://%s
    tls-server-name: localhost
    disable-compression: true
    certificate-authority: cluster-ca.crt
users:
- name: decoy
  user: {token: decoy.0000000000000000}
- name: node-bootstrapper
  user:
%s
contexts:
- name: decoy
  context: {cluster: decoy, user: decoy}
- name: prod
  context: {cluster: prod, user: node-bootstrapper}
current-context: prod
`, proxy.name, proxy.addr, user)
	if err := os.WriteFile(n.bootstrap, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestKubeletConfFromAProvisionersKubeconfig: a bootstrap kubeconfig that
// reaches the API server only through a CONNECT proxy (on the IPv6
// loopback), at a name only the proxy resolves, with tls-server-name, a
// relative CA file, compression off and several contexts gives a kubelet.conf
// that reaches it the same way: certagent proves it from disk before it
// deletes the bootstrap kubeconfig (and the token file it names), the serving
// CSR goes out on it, and client-go's loader, as the kubelet uses it, reaches
// the API server with exactly that file. Once with the token in a file, once
// from an exec credential plugin.
func TestKubeletConfFromAProvisionersKubeconfig(t *testing.T) {
	u, err := url.Parse(cp.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		user func(n *node) string // the user entry, YAML indented by four
	}{
		{"token file", func(n *node) string {
			if err := os.WriteFile(filepath.Join(filepath.Dir(n.bootstrap), "token"), []byte(n.token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			return "    tokenFile: token"
		}},
		{"exec plugin", func(n *node) string {
			script := filepath.Join(n.dir, "token-plugin.sh")
			body := fmt.Sprintf("#!/bin/sh\nprintf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"%s\"}}'\n", n.token)
			if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf("    exec: {apiVersion: client.authentication.k8s.io/v1, command: %s, interactiveMode: Never}", script)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := startConnectProxy(t, "apiserver.certagent.test:"+u.Port(), u.Host)
			n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
			writeProvisionerKubeconfig(t, n, proxy, tc.user(n))
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			go n.approver(ctx)
			if code, out := n.runOnce(); code != 0 {
				t.Fatalf("run --once exit %d:\n%s", code, out)
			}
			stop()
			for _, p := range []string{n.bootstrap, filepath.Join(filepath.Dir(n.bootstrap), "token")} {
				if exists(p) {
					t.Errorf("%s left after the bootstrap", p)
				}
			}
			if s := n.csrs(certificatesv1.KubeletServingSignerName); len(s) != 1 || s[0].Spec.Username != "system:node:"+n.name {
				t.Fatalf("serving CSRs %d, want one posted with kubelet.conf", len(s))
			}
			// kubelet.conf, read as the kubelet reads it, through the proxy.
			rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
				&clientcmd.ClientConfigLoadingRules{ExplicitPath: n.kubeconf}, &clientcmd.ConfigOverrides{}).ClientConfig()
			if err != nil {
				t.Fatal(err)
			}
			before := proxy.tunnels.Load()
			review, err := kubernetes.NewForConfigOrDie(rc).AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("kubelet.conf as the kubelet loads it: %v", err)
			}
			if got := review.Status.UserInfo; got.Username != "system:node:"+n.name || !slices.Contains(got.Groups, "system:nodes") {
				t.Fatalf("kubelet.conf authenticates as %q %v", got.Username, got.Groups)
			}
			if proxy.tunnels.Load() == before {
				t.Fatal("kubelet.conf's request did not go through the proxy")
			}
			raw, err := clientcmd.LoadFromFile(n.kubeconf)
			if err != nil {
				t.Fatal(err)
			}
			c := raw.Clusters[raw.Contexts[raw.CurrentContext].Cluster]
			if c.ProxyURL != "http://"+proxy.addr || c.TLSServerName != "localhost" || !c.DisableCompression || c.Server != "https://"+proxy.name {
				t.Fatalf("kubelet.conf's cluster %+v", c)
			}
		})
	}
}

// TestRenamedNodeBootstrapsAgain: a node that bootstrapped as one name and is
// now configured as another does not run on the old name's kubelet.conf:
// without a bootstrap kubeconfig it says what to do and requests nothing;
// with a fresh one it bootstraps as the new name.
func TestRenamedNodeBootstrapsAgain(t *testing.T) {
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  enabled: false\n")
	if code, out := n.runOnce(); code != 0 {
		t.Fatalf("first bootstrap exit %d:\n%s", code, out)
	}
	old := n.name
	n.name = old + "-renamed"
	code, out := n.runOnce("--timeout", "20s")
	if code == 0 {
		t.Fatalf("run --once as %s on %s's kubelet.conf succeeded:\n%s", n.name, old, out)
	}
	for _, want := range []string{`"system:node:` + old + `"`, "set nodeName: " + old, "no bootstrap kubeconfig at " + n.bootstrap} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
	if c := n.csrs(certificatesv1.KubeAPIServerClientKubeletSignerName); len(c) != 0 {
		t.Fatalf("%d client CSRs for %s without a bootstrap kubeconfig", len(c), n.name)
	}
	n.newToken(controlplane.TokenOptions{AutoApprove: true})
	if code, out := n.runOnce(); code != 0 {
		t.Fatalf("bootstrap as %s exit %d:\n%s", n.name, code, out)
	}
	if got, err := n.whoAmI(); err != nil || got != "system:node:"+n.name {
		t.Fatalf("kubelet.conf authenticates as %q (%v), want system:node:%s", got, err, n.name)
	}
	if exists(n.bootstrap) {
		t.Fatal("bootstrap kubeconfig left")
	}
}

// forward relays TCP connections from the IPv6 loopback to target.
func forward(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatalf("listening on the IPv6 loopback: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// TestBootstrapOverIPv6: an API server reached at an IPv6 literal
// (https://[::1]:port, its certificate checked against tls-server-name)
// gives a kubelet.conf that reaches it the same way.
func TestBootstrapOverIPv6(t *testing.T) {
	u, err := url.Parse(cp.URL)
	if err != nil {
		t.Fatal(err)
	}
	addr := forward(t, u.Host)
	n := newNode(t, controlplane.TokenOptions{AutoApprove: true})
	n.writeConfig("serving:\n  enabled: false\n")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: v6
  cluster: {server: "https://%s", tls-server-name: localhost, certificate-authority: %s}
users:
- name: bootstrap
  user: {token: %s}
contexts:
- name: v6
  context: {cluster: v6, user: bootstrap}
current-context: v6
`, addr, cp.CAFile, n.token)
	if err := os.WriteFile(n.bootstrap, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out := n.runOnce(); code != 0 {
		t.Fatalf("run --once exit %d:\n%s", code, out)
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: n.kubeconf}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if rc.Host != "https://"+addr {
		t.Fatalf("kubelet.conf server %q, want https://%s", rc.Host, addr)
	}
	if got, err := n.whoAmI(); err != nil || got != "system:node:"+n.name {
		t.Fatalf("kubelet.conf authenticates as %q (%v)", got, err)
	}
}
