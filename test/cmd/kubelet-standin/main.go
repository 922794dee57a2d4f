// Command kubelet-standin stands in for the kubelet, and for its container
// runtime, on the node suite's systemd-nspawn nodes, where the real kubelet
// cannot run (it needs a container runtime, and containerd with runc inside
// nspawn on these cgroup-v1 hosts is not what the suite is about; the real
// kubelet on certagent's files is proven on the host by e2e
// TestKubeletLivesOnCertagentFiles).
//
// Installed as /usr/bin/kubelet and started by kubeadm's own kubelet unit
// and drop-in, it does what a kubelet does with the node's certificates, as
// the real one does it:
//
//   - `kubelet --version` answers as the kubelet of the control plane's
//     version (kubeadm's preflight asks);
//   - it reads the KubeletConfiguration of --config strictly, and refuses to
//     run, saying why, where the real kubelet would obtain or rotate
//     certificates itself beside certagent: rotateCertificates or
//     serverTLSBootstrap true, or no tlsCertFile (it would make a
//     self-signed one); and, as the kubelet, without its clientCAFile;
//   - with --bootstrap-kubeconfig it runs the kubelet's own client bootstrap
//     (k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap.LoadClientCert),
//     which returns at once when kubelet.conf holds a valid certificate and
//     otherwise makes its own CSR, as the kubelet would;
//   - it registers its Node with kubelet.conf's credentials (the Node
//     authorizer and NodeRestriction check them as for a kubelet), reports it
//     Ready and renews its Lease every 10 s;
//   - it serves HTTPS on address:port with tlsCertFile/tlsPrivateKeyFile,
//     read at each handshake, and /healthz on healthzBindAddress:healthzPort
//     (what kubeadm join waits for), answering ok once the Node is
//     registered.
//
// `kubelet-standin cri ENDPOINT` serves a fake container runtime (the CRI of
// k8s.io/cri-client/pkg/fake, the one kubemark uses) on ENDPOINT, for
// kubeadm's preflight and reset, as containerd would.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/cert"
	"k8s.io/cri-client/pkg/fake"
	kubeletconfig "k8s.io/kubelet/config/v1beta1"
	"k8s.io/kubernetes/pkg/kubelet/certificate/bootstrap"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// kubernetesVersion is set at build time (-ldflags -X main.kubernetesVersion=v1.37.2).
var kubernetesVersion = "v0.0.0"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "cri" {
		if err := serveCRI(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "kubelet-standin cri:", err)
			os.Exit(1)
		}
		return
	}
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubelet-standin:", err)
		os.Exit(1)
	}
	if f.version {
		fmt.Println("Kubernetes " + kubernetesVersion)
		return
	}
	if err := run(ctx, f); err != nil {
		fmt.Fprintln(os.Stderr, "kubelet-standin:", err)
		os.Exit(1)
	}
}

type flags struct {
	version                                   bool
	config, kubeconfig, bootstrapKubeconfig   string
	certDir, hostnameOverride, nodeIP, others string
}

// parseFlags takes the kubelet's --name=value and --name value flags; the
// ones the stand-in has no use for are noted and ignored.
func parseFlags(args []string) (flags, error) {
	f := flags{certDir: "/var/lib/kubelet/pki"}
	known := map[string]*string{
		"config": &f.config, "kubeconfig": &f.kubeconfig, "bootstrap-kubeconfig": &f.bootstrapKubeconfig,
		"cert-dir": &f.certDir, "hostname-override": &f.hostnameOverride, "node-ip": &f.nodeIP,
	}
	var others []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--version" || a == "--version=true" {
			f.version = true
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			return f, fmt.Errorf("unexpected argument %q", a)
		}
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			value, i = args[i+1], i+1
		}
		if p, ok := known[name]; ok {
			*p = value
		} else {
			others = append(others, a)
		}
	}
	f.others = strings.Join(others, " ")
	return f, nil
}

func run(ctx context.Context, f flags) error {
	if f.config == "" || f.kubeconfig == "" {
		return errors.New("--config and --kubeconfig are required")
	}
	data, err := os.ReadFile(f.config)
	if err != nil {
		return fmt.Errorf("reading the kubelet configuration: %w", err)
	}
	var kc kubeletconfig.KubeletConfiguration
	if err := yaml.UnmarshalStrict(data, &kc); err != nil {
		return fmt.Errorf("decoding %s: %w", f.config, err)
	}
	fmt.Fprintf(os.Stderr, "kubelet-standin: --kubeconfig=%s --bootstrap-kubeconfig=%s, ignored: %q; rotateCertificates=%v serverTLSBootstrap=%v tlsCertFile=%s\n",
		f.kubeconfig, f.bootstrapKubeconfig, f.others, kc.RotateCertificates, kc.ServerTLSBootstrap, kc.TLSCertFile)
	// Where the real kubelet would obtain or renew a certificate itself.
	switch {
	case kc.RotateCertificates:
		return fmt.Errorf("%s: rotateCertificates is true: the kubelet would rotate its client certificate itself, beside certagent", f.config)
	case kc.ServerTLSBootstrap:
		return fmt.Errorf("%s: serverTLSBootstrap is true: the kubelet would request its serving certificate itself, beside certagent", f.config)
	case kc.TLSCertFile == "" || kc.TLSPrivateKeyFile == "":
		return fmt.Errorf("%s: no tlsCertFile/tlsPrivateKeyFile: the kubelet would serve a self-signed certificate, not certagent's", f.config)
	}
	// The kubelet loads its client CA at start and exits without it.
	if ca := kc.Authentication.X509.ClientCAFile; ca != "" {
		if _, err := cert.NewPool(ca); err != nil {
			return fmt.Errorf("authentication.x509.clientCAFile: %w", err)
		}
	}
	node := f.hostnameOverride
	if node == "" {
		if node, err = os.Hostname(); err != nil {
			return err
		}
	}
	node = strings.ToLower(node)
	if f.bootstrapKubeconfig != "" {
		// The kubelet's own code, as the kubelet calls it with these flags.
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		err := bootstrap.LoadClientCert(bctx, f.kubeconfig, f.bootstrapKubeconfig, f.certDir, types.NodeName(node))
		cancel()
		if err != nil {
			return fmt.Errorf("the kubelet's client bootstrap: %w", err)
		}
	}
	rc, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	if err != nil {
		return fmt.Errorf("loading %s: %w", f.kubeconfig, err)
	}
	rc.UserAgent = "kubelet-standin/" + kubernetesVersion
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}

	registered := make(chan struct{})
	errs := make(chan error, 3)
	go func() { errs <- serveHealthz(ctx, kc, registered) }()
	go func() { errs <- serveTLS(ctx, kc) }()
	go func() { errs <- heartbeat(ctx, client, node, f.nodeIP, kc.Port, registered) }()
	select {
	case err := <-errs:
		return err
	case <-ctx.Done():
		return nil
	}
}

// heartbeat registers the Node, reports it Ready and renews its Lease every
// 10 s, as the kubelet's node status and lease controllers do.
func heartbeat(ctx context.Context, client kubernetes.Interface, node, nodeIP string, port int32, registered chan<- struct{}) error {
	ip := net.ParseIP(nodeIP)
	if ip == nil {
		var err error
		if ip, err = utilnet.ChooseHostInterface(); err != nil {
			return fmt.Errorf("the node's address: %w", err)
		}
	}
	first := true
	for {
		err := syncNode(ctx, client, node, ip, port)
		if err == nil && first {
			fmt.Fprintf(os.Stderr, "kubelet-standin: node %s registered\n", node)
			close(registered)
			first = false
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubelet-standin: node status: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Second):
		}
	}
}

func syncNode(ctx context.Context, client kubernetes.Interface, name string, ip net.IP, port int32) error {
	n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		n, err = client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
			Name: name, Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
		}}, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node %s: %w", name, err)
	}
	now := metav1.Now()
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}}
	if port == 0 {
		port = 10250
	}
	// The API server dials InternalIP:port for logs, exec and the node proxy.
	n.Status.DaemonEndpoints.KubeletEndpoint.Port = port
	n.Status.Conditions = []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet-standin is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now,
	}}
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating node %s status: %w", name, err)
	}
	leases := client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To[int32](40)},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("node lease %s: %w", name, err)
	}
	l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renewing node lease %s: %w", name, err)
	}
	return nil
}

// serveHealthz answers /healthz on healthzBindAddress:healthzPort (kubeadm
// join polls it) once the Node is registered.
func serveHealthz(ctx context.Context, kc kubeletconfig.KubeletConfiguration, registered <-chan struct{}) error {
	port := ptr.Deref(kc.HealthzPort, 10248)
	addr := net.JoinHostPort(orDefault(kc.HealthzBindAddress, "127.0.0.1"), strconv.Itoa(int(port)))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-registered:
			fmt.Fprint(w, "ok")
		default:
			http.Error(w, "node not registered yet", http.StatusServiceUnavailable)
		}
	})
	return serve(ctx, &http.Server{Addr: addr, Handler: mux}, false)
}

// serveTLS serves /healthz over HTTPS on address:port with the serving
// certificate file, read at each handshake (the kubelet reloads it too).
func serveTLS(ctx context.Context, kc kubeletconfig.KubeletConfiguration) error {
	port := kc.Port
	if port == 0 {
		port = 10250
	}
	addr := net.JoinHostPort(orDefault(kc.Address, "0.0.0.0"), strconv.Itoa(int(port)))
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	srv := &http.Server{Addr: addr, Handler: mux, TLSConfig: &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(kc.TLSCertFile, kc.TLSPrivateKeyFile)
			return &c, err
		},
	}}
	if _, err := tls.LoadX509KeyPair(kc.TLSCertFile, kc.TLSPrivateKeyFile); err != nil {
		// The real kubelet does not start without it either.
		return fmt.Errorf("loading the serving certificate: %w", err)
	}
	return serve(ctx, srv, true)
}

func serve(ctx context.Context, srv *http.Server, withTLS bool) error {
	go func() { <-ctx.Done(); _ = srv.Close() }()
	var err error
	if withTLS {
		err = srv.ListenAndServeTLS("", "")
	} else {
		err = srv.ListenAndServe()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving on %s: %w", srv.Addr, err)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// serveCRI serves the fake container runtime on the endpoint until ctx ends.
func serveCRI(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: kubelet-standin cri unix:///run/containerd/containerd.sock")
	}
	r := fake.NewFakeRemoteRuntime()
	if err := r.Start(args[0]); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "kubelet-standin cri: serving a fake container runtime on %s\n", args[0])
	<-ctx.Done()
	r.Stop()
	return nil
}
