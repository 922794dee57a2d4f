// Command hollowkubelet is the kubelet's own code (k8s.io/kubernetes
// cmd/kubelet/app.RunKubelet) on kubemark's fakes: a fake CRI
// (k8s.io/cri-client/pkg/fake), a fake cAdvisor and a stub container manager,
// so it needs neither containerd nor systemd nor cgroup v2. It is kubemark's
// hollow node (cmd/kubemark/app/hollow_node.go, pkg/kubemark) configured the
// way certagent's README (step 5) tells operators to configure a kubelet:
//
//   - --kubeconfig is certagent's kubelet.conf, loaded as the kubelet loads it
//     when rotateCertificates is false (clientcmd, ExplicitPath). The file
//     must reference the client certificate by path: client-go then re-reads
//     it (every 5 minutes and on each new connection) and closes its
//     connections when it changed, which is what picks up certagent's
//     renewals. Certificate data embedded in the kubeconfig is refused.
//   - --config is a KubeletConfiguration file, read with the kubelet's own
//     loader (pkg/kubelet/kubeletconfig/configfiles). The certificate and
//     server settings are taken from it: rotateCertificates,
//     serverTLSBootstrap, tlsCertFile, tlsPrivateKeyFile, authentication,
//     authorization, address, port, readOnlyPort and healthzPort. Everything
//     else is kubemark's hollow configuration, and a file that sets anything
//     else is refused rather than silently ignored.
//   - The server's TLS options come from the kubelet's InitializeTLS, and
//     Dependencies.TLSOptions is set (kubemark leaves it nil and serves plain
//     HTTP), so the kubelet serves tlsCertFile through
//     NewKubeletServerCertificateDynamicFileManager (feature
//     ReloadKubeletServerCertificateFile), its real reload of that file.
//   - Authentication and authorization of the server are built with the
//     kubelet's BuildAuth, as the kubelet does.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	remote "k8s.io/cri-client/pkg"
	fakeremote "k8s.io/cri-client/pkg/fake"
	"k8s.io/klog/v2"
	kubeletapp "k8s.io/kubernetes/cmd/kubelet/app"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	cadvisortest "k8s.io/kubernetes/pkg/kubelet/cadvisor/testing"
	"k8s.io/kubernetes/pkg/kubelet/cm"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	"k8s.io/kubernetes/pkg/kubemark"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"
)

func main() {
	var o options
	fs := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	fs.StringVar(&o.name, "name", "", "the node's name (the kubelet's --hostname-override); required")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "/etc/kubernetes/kubelet.conf", "the kubeconfig certagent writes (client certificate by path)")
	fs.StringVar(&o.config, "config", "", "KubeletConfiguration file (README step 5); required")
	fs.StringVar(&o.certDir, "cert-dir", "/var/lib/kubelet/pki", "the kubelet's --cert-dir")
	fs.StringVar(&o.nodeIP, "node-ip", "", "the kubelet's --node-ip (empty: the kubelet chooses, as it does by default)")
	klog.InitFlags(fs)
	_ = fs.Parse(os.Args[1:])
	if o.name == "" || o.config == "" {
		fmt.Fprintln(os.Stderr, "hollowkubelet: --name and --config are required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "hollowkubelet: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	name, kubeconfig, config, certDir, nodeIP string
}

func run(ctx context.Context, o options) error {
	fileCfg, err := loadConfig(ctx, o.config)
	if err != nil {
		return err
	}
	clientConfig, err := kubeletClientConfig(o.kubeconfig)
	if err != nil {
		return err
	}

	// kubemark's hollow configuration (its root, static-pod and pod-log
	// directories are made under $TMPDIR), then the file's settings.
	f, c := kubemark.GetHollowKubeletConfig(&kubemark.HollowKubeletOptions{
		NodeName: o.name, MaxPods: 110, NodeLabels: map[string]string{},
	})
	f.CertDirectory = o.certDir
	f.NodeIP = o.nodeIP
	honoured.copy(c, fileCfg)

	// The kubelet's client overrides (kubeClientConfigOverrides) and its
	// heartbeat client: no client-side throttling, a timeout of the lease
	// duration or status update period, whichever is shorter.
	clientConfig.ContentType = "application/vnd.kubernetes.protobuf"
	clientConfig.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	clientConfig.QPS, clientConfig.Burst = float32(c.KubeAPIQPS), int(c.KubeAPIBurst)
	clientConfig.UserAgent = "hollowkubelet"
	client, err := clientset.NewForConfig(clientConfig)
	if err != nil {
		return fmt.Errorf("kubelet client: %w", err)
	}
	heartbeatConfig := *clientConfig
	heartbeatConfig.Timeout = min(c.NodeStatusUpdateFrequency.Duration, time.Duration(c.NodeLeaseDurationSeconds)*time.Second)
	heartbeatConfig.QPS = -1
	heartbeatClient, err := clientset.NewForConfig(&heartbeatConfig)
	if err != nil {
		return fmt.Errorf("heartbeat client: %w", err)
	}

	endpoint, err := fakeremote.GenerateEndpoint()
	if err != nil {
		return fmt.Errorf("fake CRI endpoint: %w", err)
	}
	fakeRuntime := fakeremote.NewFakeRemoteRuntime()
	if err := fakeRuntime.Start(endpoint); err != nil {
		return fmt.Errorf("fake CRI: %w", err)
	}
	defer fakeRuntime.Stop()
	runtimeService, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(endpoint).WithConnectionTimeout(15 * time.Second).Build(ctx)
	if err != nil {
		return fmt.Errorf("fake CRI runtime service: %w", err)
	}

	hk := kubemark.NewHollowKubelet(f, c, client, heartbeatClient,
		&cadvisortest.Fake{NodeName: o.name}, fakeRuntime.ImageService, runtimeService, cm.NewStubContainerManager())
	deps := hk.KubeletDeps
	// What the kubelet's run() does and kubemark skips: TLS options from
	// tlsCertFile/tlsPrivateKeyFile and the client CA, authentication and
	// authorization of its server, and closing idle connections when
	// heartbeats fail.
	if deps.TLSOptions, err = kubeletapp.InitializeTLS(ctx, f, c); err != nil {
		return fmt.Errorf("kubelet TLS: %w", err)
	}
	auth, runCAReload, err := kubeletapp.BuildAuth(types.NodeName(o.name), client, *c)
	if err != nil {
		return fmt.Errorf("kubelet server authentication and authorization: %w", err)
	}
	deps.Auth = auth
	runCAReload(ctx.Done())
	deps.OnHeartbeatFailure = func() { utilnet.CloseIdleConnectionsFor(clientConfig.Transport) }

	klog.InfoS("hollow kubelet starting", "node", o.name, "kubeconfig", o.kubeconfig,
		"clientCertificate", clientConfig.CertFile, "tlsCertFile", c.TLSCertFile, "port", c.Port)
	go hk.Run(ctx) // RunKubelet, then blocks; a failure exits the process
	<-ctx.Done()
	return nil
}

// kubeletClientConfig loads kubelet.conf as the kubelet does with
// rotateCertificates false (cmd/kubelet/app buildKubeletClientConfig; the
// same as clientcmd.BuildConfigFromFlags("", path)), and refuses certificate
// data copied into the file: only a certificate referenced by path is
// re-read by client-go.
func kubeletClientConfig(path string) (*rest.Config, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("invalid kubeconfig %s: %w", path, err)
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" || len(cfg.CertData) > 0 || len(cfg.KeyData) > 0 {
		return nil, fmt.Errorf("kubeconfig %s must reference its client certificate and key by path (client-certificate, client-key)", path)
	}
	return cfg, nil
}

// loadConfig reads a KubeletConfiguration file with the kubelet's loader and
// refuses settings this hollow kubelet would not honour.
func loadConfig(ctx context.Context, path string) (*kubeletconfig.KubeletConfiguration, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	load := func(p string) (*kubeletconfig.KubeletConfiguration, error) {
		l, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, p)
		if err != nil {
			return nil, err
		}
		return l.Load(ctx)
	}
	cfg, err := load(abs)
	if err != nil {
		return nil, fmt.Errorf("loading kubelet config %s: %w", path, err)
	}
	// A file with nothing set gives the kubelet's defaults, to compare with.
	empty, err := os.CreateTemp("", "hollowkubelet-defaults-*.yaml")
	if err != nil {
		return nil, err
	}
	defer os.Remove(empty.Name())
	_, err = empty.WriteString("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
	if cerr := empty.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("kubelet config defaults: %w", err)
	}
	defaults, err := load(empty.Name())
	if err != nil {
		return nil, fmt.Errorf("kubelet config defaults: %w", err)
	}
	rest := *cfg
	honoured.copy(&rest, defaults)
	if !reflect.DeepEqual(&rest, defaults) {
		return nil, fmt.Errorf("kubelet config %s sets settings a hollow kubelet does not honour; only %s are taken from it", path, honoured.names())
	}
	return cfg, nil
}

// honoured are the KubeletConfiguration fields taken from --config.
var honoured = fieldSet{
	"rotateCertificates": func(d, s *kubeletconfig.KubeletConfiguration) { d.RotateCertificates = s.RotateCertificates },
	"serverTLSBootstrap": func(d, s *kubeletconfig.KubeletConfiguration) { d.ServerTLSBootstrap = s.ServerTLSBootstrap },
	"tlsCertFile":        func(d, s *kubeletconfig.KubeletConfiguration) { d.TLSCertFile = s.TLSCertFile },
	"tlsPrivateKeyFile":  func(d, s *kubeletconfig.KubeletConfiguration) { d.TLSPrivateKeyFile = s.TLSPrivateKeyFile },
	"authentication":     func(d, s *kubeletconfig.KubeletConfiguration) { d.Authentication = s.Authentication },
	"authorization":      func(d, s *kubeletconfig.KubeletConfiguration) { d.Authorization = s.Authorization },
	"address":            func(d, s *kubeletconfig.KubeletConfiguration) { d.Address = s.Address },
	"port":               func(d, s *kubeletconfig.KubeletConfiguration) { d.Port = s.Port },
	"readOnlyPort":       func(d, s *kubeletconfig.KubeletConfiguration) { d.ReadOnlyPort = s.ReadOnlyPort },
	"healthzPort":        func(d, s *kubeletconfig.KubeletConfiguration) { d.HealthzPort = s.HealthzPort },
}

type fieldSet map[string]func(dst, src *kubeletconfig.KubeletConfiguration)

func (fs fieldSet) copy(dst, src *kubeletconfig.KubeletConfiguration) {
	for _, f := range fs {
		f(dst, src)
	}
}

func (fs fieldSet) names() string {
	return strings.Join(slices.Sorted(maps.Keys(fs)), ", ")
}
