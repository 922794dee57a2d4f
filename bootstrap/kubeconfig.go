package bootstrap

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certagent/certagent/internal/atomicfile"
)

// LoadBootstrapKubeconfig reads and checks a bootstrap kubeconfig and returns
// a client configuration for it. Every defect is reported with the file name
// and what to change; a missing file wraps os.ErrNotExist.
func LoadBootstrapKubeconfig(path string, allowInsecure bool) (*rest.Config, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("bootstrap kubeconfig %s: %w", path, err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap kubeconfig %s is not a valid kubeconfig: %w", path, err)
	}
	resolvePaths(cfg, filepath.Dir(path))
	return restConfigFrom(path, cfg, allowInsecure)
}

func restConfigFrom(path string, cfg *clientcmdapi.Config, allowInsecure bool) (*rest.Config, error) {
	ctxName := cfg.CurrentContext
	if ctxName == "" && len(cfg.Contexts) == 1 {
		for n := range cfg.Contexts {
			ctxName = n
		}
	}
	kctx, ok := cfg.Contexts[ctxName]
	switch {
	case ctxName == "":
		return nil, fmt.Errorf("kubeconfig %s has no current-context (and not exactly one context to pick)", path)
	case !ok:
		return nil, fmt.Errorf("kubeconfig %s: current-context %q is not defined under contexts", path, ctxName)
	}
	cluster, ok := cfg.Clusters[kctx.Cluster]
	if !ok {
		return nil, fmt.Errorf("kubeconfig %s: context %q names cluster %q, which is not defined under clusters", path, ctxName, kctx.Cluster)
	}
	if cluster.Server == "" {
		return nil, fmt.Errorf("kubeconfig %s: cluster %q has no server", path, kctx.Cluster)
	}
	user, ok := cfg.AuthInfos[kctx.AuthInfo]
	if !ok {
		return nil, fmt.Errorf("kubeconfig %s: context %q names user %q, which is not defined under users", path, ctxName, kctx.AuthInfo)
	}
	if user.Token == "" && user.TokenFile == "" && user.ClientCertificate == "" && len(user.ClientCertificateData) == 0 && user.Exec == nil {
		return nil, fmt.Errorf("kubeconfig %s: user %q has no credentials (no token, tokenFile, client certificate or exec plugin)", path, kctx.AuthInfo)
	}
	if cluster.InsecureSkipTLSVerify && !allowInsecure {
		return nil, fmt.Errorf("kubeconfig %s sets insecure-skip-tls-verify: anyone between this node and %s could pose as the API server and receive the node's credentials; set certificate-authority(-data) instead, or set allowInsecureBootstrap: true in the certagent config to accept that risk", path, cluster.Server)
	}
	if cluster.CertificateAuthority != "" {
		if _, err := os.Stat(cluster.CertificateAuthority); err != nil {
			return nil, fmt.Errorf("kubeconfig %s: cluster %q certificate-authority: %w", path, kctx.Cluster, err)
		}
	}
	rc, err := clientcmd.NewNonInteractiveClientConfig(*cfg, ctxName, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return rc, nil
}

// LoadKubeletKubeconfig reads kubelet.conf (or any kubeconfig) without the
// bootstrap-only checks. A missing file wraps os.ErrNotExist.
func LoadKubeletKubeconfig(path string) (*rest.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseKubeletKubeconfig(path, data)
}

// parseKubeletKubeconfig is LoadKubeletKubeconfig of a file at path holding data.
func parseKubeletKubeconfig(path string, data []byte) (*rest.Config, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s is not a valid kubeconfig: %w", path, err)
	}
	// As clientcmd.LoadFromFile does.
	for _, c := range cfg.Clusters {
		c.LocationOfOrigin = path
	}
	for _, u := range cfg.AuthInfos {
		u.LocationOfOrigin = path
	}
	for _, c := range cfg.Contexts {
		c.LocationOfOrigin = path
	}
	resolvePaths(cfg, filepath.Dir(path))
	return restConfigFrom(path, cfg, true)
}

// resolvePaths makes the file references of cfg absolute, relative to base
// (the kubeconfig's directory), as kubectl does.
func resolvePaths(cfg *clientcmdapi.Config, base string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	for _, c := range cfg.Clusters {
		abs(&c.CertificateAuthority)
	}
	for _, u := range cfg.AuthInfos {
		abs(&u.ClientCertificate)
		abs(&u.ClientKey)
		abs(&u.TokenFile)
	}
}

// ClientCertificate returns the leaf client certificate a rest config uses.
func ClientCertificate(rc *rest.Config) (*x509.Certificate, error) {
	_, leaf, err := clientCertificate(rc)
	return leaf, err
}

// clientCertificate returns the PEM a rest config's client certificate comes
// from and its leaf.
func clientCertificate(rc *rest.Config) ([]byte, *x509.Certificate, error) {
	data := rc.CertData
	if len(data) == 0 && rc.CertFile != "" {
		var err error
		if data, err = os.ReadFile(rc.CertFile); err != nil {
			return nil, nil, fmt.Errorf("reading client certificate: %w", err)
		}
	}
	if len(data) == 0 {
		return nil, nil, errors.New("the kubeconfig has no client certificate")
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, nil, err
	}
	return data, certs[0], nil
}

// kubeletKubeconfig is kubelet.conf as certagent writes it: its bytes (or
// why there are none), and once written those bytes parsed as LoadNode
// parses the file.
type kubeletKubeconfig struct {
	data []byte
	rc   *rest.Config
	err  error
}

// encodeKubeletKubeconfig encodes kubelet.conf the way the kubelet writes it
// after bootstrapping (cluster default-cluster, user default-auth, context
// default-context) with the server and CA of base (the bootstrap kubeconfig,
// or kubelet.conf as it was) and the client certificate and key referenced
// through the current link, never embedded, so renewals need no rewrite.
func (b *Bootstrapper) encodeKubeletKubeconfig(base *rest.Config) kubeletKubeconfig {
	cluster := &clientcmdapi.Cluster{Server: base.Host, InsecureSkipTLSVerify: base.Insecure}
	if base.CAFile != "" {
		abs, err := filepath.Abs(base.CAFile)
		if err != nil {
			return kubeletKubeconfig{err: fmt.Errorf("resolving CA path: %w", err)}
		}
		cluster.CertificateAuthority = abs
	} else {
		cluster.CertificateAuthorityData = base.CAData
	}
	pemPath := CurrentPath(b.cfg.CertDir, Client)
	cfg := clientcmdapi.Config{
		Clusters:       map[string]*clientcmdapi.Cluster{"default-cluster": cluster},
		AuthInfos:      map[string]*clientcmdapi.AuthInfo{"default-auth": {ClientCertificate: pemPath, ClientKey: pemPath}},
		Contexts:       map[string]*clientcmdapi.Context{"default-context": {Cluster: "default-cluster", AuthInfo: "default-auth", Namespace: "default"}},
		CurrentContext: "default-context",
	}
	data, err := clientcmd.Write(cfg)
	if err != nil {
		return kubeletKubeconfig{err: fmt.Errorf("encoding kubeconfig: %w", err)}
	}
	return kubeletKubeconfig{data: data}
}

// writeKubeletKubeconfig writes kubelet.conf atomically.
func (b *Bootstrapper) writeKubeletKubeconfig(k kubeletKubeconfig) error {
	s, err := b.stageKubeletKubeconfig(k)
	if err != nil {
		return err
	}
	return s.commit()
}

// stagedKubeconfig is kubelet.conf written and synced under a temporary
// name, for commit to put in place.
type stagedKubeconfig struct {
	b      *Bootstrapper
	k      kubeletKubeconfig
	staged *atomicfile.Staged
}

// stageKubeletKubeconfig writes k beside kubelet.conf (through a symlink:
// the link stays and its target is replaced) and syncs it; kubelet.conf is
// untouched until commit.
func (b *Bootstrapper) stageKubeletKubeconfig(k kubeletKubeconfig) (*stagedKubeconfig, error) {
	if k.err != nil {
		return nil, k.err
	}
	target, err := linkTarget(b.cfg.KubeconfigPath)
	if err != nil {
		return nil, err
	}
	if err := CheckDirSafe(filepath.Dir(target)); err != nil {
		return nil, err
	}
	if err := atomicfile.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", target, err)
	}
	staged, err := atomicfile.Stage(target, k.data, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writing kubeconfig %s: %w", target, err)
	}
	return &stagedKubeconfig{b: b, k: k, staged: staged}, nil
}

// commit puts the staged kubelet.conf in place. Its content is parsed
// meanwhile (parsing checks that the certificate it references exists, so
// not before the certificate is stored), and LoadNode then reads the file
// without parsing it again.
func (s *stagedKubeconfig) commit() error {
	parsed := make(chan kubeletKubeconfig, 1)
	go func() {
		rc, err := parseKubeletKubeconfig(s.b.cfg.KubeconfigPath, s.k.data)
		parsed <- kubeletKubeconfig{data: s.k.data, rc: rc, err: err}
	}()
	if err := s.staged.Commit(); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	if p := <-parsed; p.err == nil { // else LoadNode parses the file and says what is wrong
		s.b.mu.Lock()
		s.b.written = p
		s.b.mu.Unlock()
	}
	return nil
}

// abort removes the staged file; kubelet.conf stays as it was.
func (s *stagedKubeconfig) abort() {
	if s != nil {
		s.staged.Abort()
	}
}

// kubeconfigStaging encodes and stages kubelet.conf for the server and CA
// of base on a goroutine of its own (started once, by start), for a
// bootstrap to commit once its certificate is stored.
type kubeconfigStaging struct {
	b    *Bootstrapper
	base *rest.Config
	done chan staging // nil until start
}

type staging struct {
	s   *stagedKubeconfig
	err error
}

func (k *kubeconfigStaging) start() {
	if k.done != nil {
		return
	}
	k.done = make(chan staging, 1)
	go func() {
		// Sent even if the goroutine ends early (runtime.Goexit: the
		// simulator's kill at a failpoint), so an abort waiting for it ends.
		st := staging{err: errors.New("kubelet.conf's staging ended before it was written")}
		defer func() { k.done <- st }()
		s, err := k.b.stageKubeletKubeconfig(k.b.encodeKubeletKubeconfig(k.base))
		st = staging{s, err}
	}()
}

// commit puts the staged kubelet.conf in place (starting the staging if
// nothing did). A cancelled ctx (the daemon stopping) ends the wait for the
// staging: kubelet.conf stays as it was and the staged file is removed once
// written.
func (k *kubeconfigStaging) commit(ctx context.Context) error {
	k.start()
	select {
	case st := <-k.done:
		if st.err != nil {
			return st.err
		}
		return st.s.commit()
	case <-ctx.Done():
		k.abort(ctx)
		return fmt.Errorf("writing kubeconfig: %w", context.Cause(ctx))
	}
}

// abort removes what was staged, if anything: at once if the staging is
// done, else when it is (on a goroutine of its own once ctx is cancelled).
func (k *kubeconfigStaging) abort(ctx context.Context) {
	if k.done == nil {
		return
	}
	select {
	case st := <-k.done:
		st.s.abort()
	case <-ctx.Done():
		go func() { (<-k.done).s.abort() }()
	}
}

// linkTarget is the file path names: path itself, or what its chain of
// symlinks ends at (which may not exist yet).
func linkTarget(path string) (string, error) {
	for range 40 {
		fi, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			return path, nil
		}
		if err != nil {
			return "", fmt.Errorf("inspecting %s: %w", path, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return path, nil
		}
		next, err := os.Readlink(path)
		if err != nil {
			return "", fmt.Errorf("reading link %s: %w", path, err)
		}
		if !filepath.IsAbs(next) {
			next = filepath.Join(filepath.Dir(path), next)
		}
		path = next
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// caPool returns the CAs an issued certificate must chain to: issuerCAFile if
// set, else the cluster CA of the bootstrap kubeconfig.
func caPool(rc *rest.Config, issuerCAFile string) (*x509.CertPool, error) {
	var data []byte
	var src string
	switch {
	case issuerCAFile != "":
		src = issuerCAFile
	case len(rc.CAData) > 0:
		data, src = rc.CAData, "certificate-authority-data"
	case rc.CAFile != "":
		src = rc.CAFile
	default:
		return nil, errors.New("the kubeconfig names no certificate authority to verify issued certificates against: set issuerCAFile in the certagent config")
	}
	if data == nil {
		var err error
		if data, err = os.ReadFile(src); err != nil {
			return nil, fmt.Errorf("reading issuer CA: %w", err)
		}
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("reading issuer CA from %s: %w", src, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
