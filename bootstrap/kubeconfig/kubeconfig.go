package kubeconfig

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// File is a kubeconfig as read from disk: the client configuration
// built from it, and the cluster entry its context names (file paths made
// absolute), whose connection settings kubelet.conf carries on.
type File struct {
	Path    string
	Config  *rest.Config
	Cluster *clientcmdapi.Cluster
}

// LoadBootstrap reads and checks a bootstrap kubeconfig. Every
// defect is reported with the file name and what to change; a missing file
// wraps os.ErrNotExist.
func LoadBootstrap(path string, allowInsecure bool) (*File, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("bootstrap kubeconfig %s: %w", path, err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("bootstrap kubeconfig %s is not a valid kubeconfig: %w", path, err)
	}
	resolvePaths(cfg, filepath.Dir(path))
	ctxName := bootstrapContext(cfg)
	cluster, err := checkKubeconfig(path, cfg, ctxName, allowInsecure)
	if err != nil {
		return nil, err
	}
	rc, err := clientcmd.NewNonInteractiveClientConfig(*cfg, ctxName, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return &File{Path: path, Config: rc, Cluster: cluster.DeepCopy()}, nil
}

// bootstrapContext is the context a bootstrap kubeconfig is used with: the
// current one, or the only one.
func bootstrapContext(cfg *clientcmdapi.Config) string {
	if cfg.CurrentContext == "" && len(cfg.Contexts) == 1 {
		for n := range cfg.Contexts {
			return n
		}
	}
	return cfg.CurrentContext
}

// TokenFile is the token file the bootstrap kubeconfig at path
// authenticates with ("" if none, or if the file cannot be read).
func TokenFile(path string) string {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return ""
	}
	resolvePaths(cfg, filepath.Dir(path))
	if c := cfg.Contexts[bootstrapContext(cfg)]; c != nil {
		if u := cfg.AuthInfos[c.AuthInfo]; u != nil {
			return u.TokenFile
		}
	}
	return ""
}

// LoadKubelet reads kubelet.conf (or any kubeconfig) as the
// kubelet does. A missing file wraps os.ErrNotExist.
func LoadKubelet(path string) (*rest.Config, error) {
	k, err := LoadAsKubelet(path)
	if err != nil {
		return nil, err
	}
	return k.Config, nil
}

// LoadAsKubelet reads the kubeconfig at path exactly as a kubelet started
// with --kubeconfig=path (and certificate rotation off) builds its client
// (cmd/kubelet/app/server.go, buildKubeletClientConfig): whatever works here
// works for the kubelet, and nothing the kubelet would not use is used. Where
// that fails, the checks of a bootstrap kubeconfig say what is wrong.
func LoadAsKubelet(path string) (*File, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, &clientcmd.ConfigOverrides{})
	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s is not a valid kubeconfig: %w", path, err)
	}
	// The kubelet uses current-context and nothing else.
	cluster, err := checkKubeconfig(path, &raw, raw.CurrentContext, true)
	if err != nil {
		return nil, err
	}
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return &File{Path: path, Config: rc, Cluster: cluster.DeepCopy()}, nil
}

// checkKubeconfig checks that context ctxName of cfg (read from path) names
// a cluster with a server and a user with credentials, and returns the
// cluster entry.
func checkKubeconfig(path string, cfg *clientcmdapi.Config, ctxName string, allowInsecure bool) (*clientcmdapi.Cluster, error) {
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
	return cluster, nil
}

// resolvePaths makes the file references of cfg absolute, relative to base
// (the kubeconfig's directory), as kubectl and the kubelet do.
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
