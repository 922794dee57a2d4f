package controlplane

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Options configure Start.
type Options struct {
	// Dir is the working directory for certificates, etcd data,
	// kubeconfigs and logs; required (pass t.TempDir() or a temp dir). It
	// must not hold a previous control plane.
	Dir string
	// SigningDuration is the controller-manager's
	// --cluster-signing-duration; 24h if zero.
	SigningDuration time.Duration
	// ControllerManagerQPS and ControllerManagerBurst are the
	// controller-manager's client rate limit (--kube-api-qps,
	// --kube-api-burst); zero keeps its defaults, 20 and 30. Approving and
	// signing a kubelet client CSR costs it two writes and signing a serving
	// CSR one, so this limit paces a fleet's scale-up.
	ControllerManagerQPS   float32
	ControllerManagerBurst int
	// MaxRequestsInflight and MaxMutatingRequestsInflight are the API
	// server's --max-requests-inflight and --max-mutating-requests-inflight;
	// zero keeps its defaults, 400 and 200. With API Priority and Fairness
	// (on by default) their sum is the server's concurrency, shared out among
	// the priority levels: lowering them makes overload reachable on a small
	// machine.
	MaxRequestsInflight         int
	MaxMutatingRequestsInflight int
	// BindAddress is the API server's --bind-address and
	// --advertise-address, and an IP SAN of its serving certificate besides
	// 127.0.0.1; URL names it. It must be an address of this host when Start
	// runs (a bridge for network namespaces to reach the API server). Nil
	// keeps 127.0.0.1: loopback only.
	BindAddress net.IP
	// PublishServingTrust runs kube-controller-manager's
	// kube-apiserver-serving-clustertrustbundle-publisher-controller with
	// --root-ca-file = TrustBundleFile, so that it publishes the API server's
	// serving CAs as a ClusterTrustBundle, and makes the API server's
	// --client-ca-file and --kubelet-certificate-authority that same bundle
	// file, as a CA rotation (AddCA … RemoveOldCA) needs.
	PublishServingTrust bool
	// Logf, if set, receives progress messages.
	Logf func(string, ...any)
}

// ControlPlane is a running etcd, kube-apiserver and kube-controller-manager.
type ControlPlane struct {
	// Dir is Options.Dir.
	Dir string
	// LogDir holds <component>.log for each process: Dir/logs.
	LogDir string
	// URL is the apiserver's URL, https://127.0.0.1:<port> (or
	// Options.BindAddress instead of 127.0.0.1).
	URL string
	// EtcdURL is etcd's client URL, http://127.0.0.1:<port>.
	EtcdURL string
	// CAFile is the cluster CA certificate (PEM); the CA signs the
	// apiserver serving certificate, the admin client certificate, and,
	// through the controller-manager, kubelet certificates. After a CA
	// rotation's SwitchSigners it is the new CA's.
	CAFile    string
	CACertPEM []byte
	// CAKeyFile is the cluster CA's private key (PKCS#8 PEM).
	CAKeyFile string
	// AdminConfig authenticates with a client certificate in
	// system:masters (CN=certagent-admin). A CA rotation's phases replace
	// AdminConfig and Admin (the CAs they trust, the certificate): read
	// them afresh after a phase, and not from another goroutine during one.
	AdminConfig *rest.Config
	Admin       kubernetes.Interface
	// AdminKubeconfig is a kubeconfig file (Dir/admin.conf) equivalent to
	// AdminConfig, for kubectl and humans.
	AdminKubeconfig string
	// AuditLog is the API server's audit log (JSON lines): every request
	// made by a node or a bootstrap token, at the Metadata level.
	AuditLog    string
	auditPolicy string

	// TrustBundleFile is the CA bundle the API server's --client-ca-file
	// and --kubelet-certificate-authority name (and, with
	// PublishServingTrust, the controller-manager's --root-ca-file): CAFile
	// itself unless PublishServingTrust, where a CA rotation rewrites it.
	TrustBundleFile string

	bins         Binaries
	pki          *pkiFiles
	publishTrust bool
	rotation     *caRotation
	// clientCAPEM are the CAs the admin and controller-manager kubeconfigs
	// trust for the API server: the cluster CA, both during a CA rotation.
	clientCAPEM     []byte
	port            int
	signingDuration time.Duration
	// startSigningDuration is signingDuration as Start set it.
	startSigningDuration time.Duration
	kcmQPS               float32
	kcmBurst             int
	maxInflight          [2]int // --max-requests-inflight, --max-mutating-requests-inflight; 0: default
	bindAddress          net.IP // Options.BindAddress, 127.0.0.1 if nil
	kcmKubeconfig        string
	logf                 func(string, ...any)

	mu        sync.Mutex
	stopped   bool
	etcd      *process
	apiserver *process
	kcm       *process
}

// Start generates fresh PKI under opts.Dir, starts etcd, kube-apiserver
// (bootstrap-token authentication, Node,RBAC authorization, NodeRestriction
// admission) and, once /readyz answers ok, kube-controller-manager with the
// CSR and bootstrap-token controllers; it then installs kubeadm's bootstrap
// RBAC and returns when the controller-manager has signed a probe CSR.
//
// ctx bounds only the start-up; the processes run until Stop (or until the
// calling process dies). On failure everything started is stopped and the
// error includes the tail of the failing component's log, which is also in
// opts.Dir/logs.
func Start(ctx context.Context, bins Binaries, opts Options) (*ControlPlane, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("start control plane: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	cp := &ControlPlane{
		Dir:             dir,
		LogDir:          filepath.Join(dir, "logs"),
		AdminKubeconfig: filepath.Join(dir, "admin.conf"),
		kcmKubeconfig:   filepath.Join(dir, "controller-manager.conf"),
		bins:            bins,
		signingDuration: opts.SigningDuration,
		kcmQPS:          opts.ControllerManagerQPS,
		kcmBurst:        opts.ControllerManagerBurst,
		maxInflight:     [2]int{opts.MaxRequestsInflight, opts.MaxMutatingRequestsInflight},
		bindAddress:     opts.BindAddress,
		logf:            opts.Logf,
		publishTrust:    opts.PublishServingTrust,
	}
	if cp.bindAddress == nil {
		cp.bindAddress = net.IPv4(127, 0, 0, 1)
	}
	if cp.signingDuration == 0 {
		cp.signingDuration = 24 * time.Hour
	}
	cp.startSigningDuration = cp.signingDuration
	if cp.logf == nil {
		cp.logf = func(string, ...any) {}
	}
	if err := cp.start(ctx); err != nil {
		cp.Stop()
		return nil, fmt.Errorf("start control plane in %s: %w", dir, err)
	}
	return cp, nil
}

// start does Start's work; the caller stops cp on error.
func (cp *ControlPlane) start(ctx context.Context) error {
	t0 := time.Now()
	if _, err := os.Stat(filepath.Join(cp.Dir, "etcd")); err == nil {
		return fmt.Errorf("%s already holds a control plane's etcd data; use a fresh directory", cp.Dir)
	}
	if err := os.MkdirAll(cp.LogDir, 0o755); err != nil {
		return fmt.Errorf("create log dir: %w", err)
	}
	p, err := generatePKI(filepath.Join(cp.Dir, "pki"), cp.bindAddress)
	if err != nil {
		return fmt.Errorf("generate PKI: %w", err)
	}
	cp.pki = p
	cp.clientCAPEM = p.caCertPEM
	cp.CAFile, cp.CAKeyFile, cp.CACertPEM = p.CACert, p.CAKey, p.caCertPEM
	if err := cp.setUpTrustBundle(); err != nil {
		return err
	}
	cp.AuditLog, cp.auditPolicy = filepath.Join(cp.LogDir, "audit.log"), filepath.Join(cp.Dir, "audit-policy.yaml")
	if err := os.WriteFile(cp.auditPolicy, []byte(auditPolicy), 0o644); err != nil {
		return fmt.Errorf("write audit policy: %w", err)
	}

	cp.mu.Lock()
	defer cp.mu.Unlock()

	cp.etcd, cp.EtcdURL, err = startEtcd(ctx, cp.bins.Etcd, cp.Dir)
	if err != nil {
		return err
	}
	cp.logf("control plane: etcd healthy at %s after %s", cp.EtcdURL, time.Since(t0).Round(time.Millisecond))

	if err := cp.startFirstAPIServer(ctx); err != nil {
		return err
	}
	cp.logf("control plane: kube-apiserver ready at %s after %s", cp.URL, time.Since(t0).Round(time.Millisecond))

	if err := cp.writeControllerManagerKubeconfig(); err != nil {
		return err
	}
	if err := cp.installKubeadmRBAC(ctx); err != nil {
		return err
	}
	if err := cp.startControllerManager(ctx); err != nil {
		return err
	}
	cp.logf("control plane: kube-controller-manager signing CSRs after %s (logs in %s)", time.Since(t0).Round(time.Millisecond), cp.LogDir)
	return nil
}

// startFirstAPIServer picks a free port, builds the admin client for it,
// writes the admin kubeconfig and starts kube-apiserver, retrying with
// another port if the chosen one was taken in the meantime.
func (cp *ControlPlane) startFirstAPIServer(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		cp.port = ports[0]
		cp.URL = "https://" + net.JoinHostPort(cp.bindAddress.String(), strconv.Itoa(cp.port))
		if err := cp.setupAdmin(); err != nil {
			return err
		}
		proc, err := cp.startAPIServerProcess(ctx)
		if err == nil {
			cp.apiserver = proc
			return nil
		}
		lastErr = err
		if proc == nil || !portInUse(proc) {
			break
		}
		cp.logf("control plane: apiserver port %d was taken, retrying", cp.port)
	}
	return fmt.Errorf("start kube-apiserver: %w", lastErr)
}

// setupAdmin builds AdminConfig and Admin for cp.URL and writes
// AdminKubeconfig.
func (cp *ControlPlane) setupAdmin() error {
	cp.AdminConfig = &rest.Config{
		Host: cp.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.clientCAPEM,
			CertData: cp.pki.adminCertPEM,
			KeyData:  cp.pki.adminKeyPEM,
		},
		QPS:       100,
		Burst:     200,
		UserAgent: "certagent-test-controlplane",
	}
	admin, err := kubernetes.NewForConfig(cp.AdminConfig)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	cp.Admin = admin
	if err := writeKubeconfig(cp.AdminKubeconfig,
		clientCertKubeconfig(cp.URL, cp.clientCAPEM, "certagent-admin", cp.pki.adminCertPEM, cp.pki.adminKeyPEM)); err != nil {
		return fmt.Errorf("admin kubeconfig: %w", err)
	}
	return nil
}

// writeControllerManagerKubeconfig writes the controller-manager's
// kubeconfig: its client certificate, trusting clientCAPEM.
func (cp *ControlPlane) writeControllerManagerKubeconfig() error {
	if err := writeKubeconfig(cp.kcmKubeconfig,
		clientCertKubeconfig(cp.URL, cp.clientCAPEM, "system:kube-controller-manager", cp.pki.kcmCertPEM, cp.pki.kcmKeyPEM)); err != nil {
		return fmt.Errorf("controller-manager kubeconfig: %w", err)
	}
	return nil
}

// Stop kills the controller-manager, the apiserver and etcd (in that order)
// and waits for them to exit. It is idempotent and safe to call on a
// partially started control plane.
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.stopped = true
	for _, p := range []*process{cp.kcm, cp.apiserver, cp.etcd} {
		if p != nil {
			p.kill()
		}
	}
	cp.kcm, cp.apiserver, cp.etcd = nil, nil, nil
}

// APIServerPID is the process id of the running kube-apiserver, 0 while it
// is stopped (for reading its /proc/<pid>/stat and status).
func (cp *ControlPlane) APIServerPID() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.apiserver.pid()
}

// ControllerManagerPID is the process id of the running
// kube-controller-manager, 0 if it is not running.
func (cp *ControlPlane) ControllerManagerPID() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.kcm.pid()
}
